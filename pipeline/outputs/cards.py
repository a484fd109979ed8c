"""What the storyboard page and the review app show: scenes, shots, takes as plain values.

:func:`board` turns a manifest (its re-rolled takes included), the replayed checkpoint and the
picks into a :class:`Board` that the templates (``pipeline/templates/``) render; :func:`card`
builds one take's :class:`Card` (what the review app sends when a take changes). Links are
relative to the run directory (``shots/<id>.mp4``, ``posters/<id>.jpg``, ``thumbs/...``) and
URL-quoted; nothing here reads more than whether files exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline._util.redaction import redact
from pipeline.journal.state import RunState, ShotRecord
from pipeline.manifest.loader import Manifest
from pipeline.models import Asset, MediaRole, Shot, ShotState
from pipeline.outputs.posters import POSTERS
from pipeline.outputs.report import picked_ids
from pipeline.outputs.sheetfiles import SHEET, sheet_files
from pipeline.outputs.thumbs import thumb_name

#: Files of a run directory the page links when they exist: (file, label).
LINKS = (
    ("animatic.mp4", "animatic"),
    (SHEET, "contact sheet"),  # and the sheets after it, when there are more
    ("report.json", "report.json"),
    ("timeline.otio", "timeline.otio"),
)
_ROLES = {
    MediaRole.IMAGE: "first frame",
    MediaRole.END_IMAGE: "end frame",
    MediaRole.REFERENCE_IMAGE: "reference image",
    MediaRole.REFERENCE_VIDEO: "reference video",
    MediaRole.REFERENCE_AUDIO: "reference audio",
}


@dataclass(frozen=True, slots=True)
class Media:
    """One input of a take: ``role`` (first frame...), file ``name``, ``thumb`` link or None."""

    role: str
    name: str
    thumb: str | None


@dataclass(frozen=True, slots=True)
class Card:
    """One take as shown: links are relative and quoted; texts are not escaped (templates do).

    ``cost`` is the display text (``$0.40``, ``≈$0.35 est.``, ``unknown``, ``not charged``...)
    and ``usd`` the known amount (None: unknown or nothing spent); ``notes`` are
    ``{"ts", "text"}`` dicts, oldest first.
    """

    id: str
    key: str
    take: int | None
    state: str
    poster: str | None
    video: str | None
    prompt: str
    model: str
    duration: int
    aspect_ratio: str
    cost: str
    usd: float | None
    attempts: str
    job: str
    error: str | None
    seed: int | None
    credits: float | None
    picked: bool
    rejected: bool
    notes: list[dict[str, str]]
    media: list[Media]
    reroll: bool

    @property
    def label(self) -> str:
        """The state in words (``needs reconcile``)."""
        return self.state.replace("_", " ")

    def as_json(self) -> dict[str, Any]:
        """The card as JSON values (the review app's ``/api/state``)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["media"] = [{"role": m.role, "name": m.name, "thumb": m.thumb} for m in self.media]
        out["label"] = self.label
        return out


@dataclass(slots=True)
class Group:
    """The takes of one shot (``key`` ``<scene>-<shot>``); ``picked``: the chosen take or None."""

    key: str
    name: str
    cards: list[Card]
    picked: int | None

    @property
    def multi(self) -> bool:
        """True when the shot has takes (shown side by side)."""
        return len(self.cards) > 1 or self.cards[0].take is not None


@dataclass(slots=True)
class Scene:
    """A scene: ``index`` (1-based), ``id``, its shots' groups."""

    index: int
    id: str
    groups: list[Group] = field(default_factory=list)

    @property
    def takes(self) -> int:
        """Number of takes in the scene."""
        return sum(len(g.cards) for g in self.groups)


@dataclass(slots=True)
class Board:
    """The whole run as shown: ``stats`` are ``(state, count)`` in state order."""

    name: str
    simulated: bool
    scenes: list[Scene]
    stats: list[tuple[str, int]]
    total: str
    links: list[tuple[str, str]]
    generated: str

    @property
    def cards(self) -> list[Card]:
        """Every take, in manifest order."""
        return [c for s in self.scenes for g in s.groups for c in g.cards]

    @property
    def sub(self) -> str:
        """The line under the title (scenes, shots, takes, when)."""
        shots = sum(len(s.groups) for s in self.scenes)
        takes = len(self.cards)
        when = self.generated
        return f"{len(self.scenes)} scenes · {shots} shots · {takes} takes · generated {when}"


def money(usd: float) -> str:
    """``$1,234.50``; sub-cent amounts with four decimals."""
    return f"${usd:,.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def cost(rec: ShotRecord | None) -> tuple[str, float | None]:
    """Display text and known dollar amount (None when unknown or nothing was spent)."""
    if rec is None or (rec.attempt == 0 and rec.job is None):
        return "nothing spent", None
    if rec.state == ShotState.FAILED and rec.charged == "no":
        return "not charged", None  # rejected or refunded: a quote or estimate was not spent
    if rec.cost_usd is not None:
        return money(rec.cost_usd), rec.cost_usd
    if rec.est_usd is not None:
        return f"≈{money(rec.est_usd)} est.", rec.est_usd
    return "unknown", None


def _media(run_dir: Path, asset: Asset) -> Media:
    if asset.path is not None:
        name = asset.path.name
    else:  # a remote URL: its last path segment (no scheme or host on the page)
        name = (asset.url or "").rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "remote file"
    thumb = thumb_name(asset)
    if thumb is not None and not (run_dir / thumb).is_file():
        thumb = None
    return Media(_ROLES[asset.role], name, quote(thumb) if thumb else None)


def card(run_dir: Path, shot: Shot, state: RunState, picked: bool) -> Card:
    """The :class:`Card` of take ``shot`` (``picked``: it is its shot's chosen take).

    Thumbnails are linked when :func:`pipeline.outputs.thumbs.ensure_thumbs` made them.
    """
    rec = state.shots.get(shot.id)
    st = rec.state if rec is not None else ShotState.PENDING
    poster = f"{POSTERS}/{shot.id}.jpg"
    video = rec.output if rec is not None and st == ShotState.DONE else None
    if video is not None and not (run_dir / video).is_file():
        video = None
    text, usd = cost(rec)
    attempts = rec.attempt if rec is not None else 0
    model = (
        f"{rec.provider}/{rec.model}" if rec and rec.provider else f"{shot.provider}/{shot.model}"
    )
    verdict = state.review.get(shot.id, {})
    return Card(
        id=shot.id,
        key=f"{shot.scene}-{shot.name}",
        take=shot.take,
        state=st.value,
        poster=quote(poster) if (run_dir / poster).is_file() else None,
        video=quote(video) if video is not None else None,
        prompt=shot.prompt,
        model=model,
        duration=shot.duration,
        aspect_ratio=shot.aspect_ratio,
        cost=text,
        usd=usd,
        attempts=str(attempts) if attempts else "none yet",
        job=rec.job.job_id if rec and rec.job else "—",
        error=redact(rec.error) if rec and rec.error else None,
        seed=shot.seed,
        credits=rec.credits if rec is not None else None,
        picked=picked,
        rejected=bool(verdict.get("rejected")),
        notes=[{"ts": n["ts"], "text": n["text"]} for n in verdict.get("notes", [])],
        media=[_media(run_dir, a) for a in shot.assets],
        reroll=shot.id in state.rerolls,
    )


def _total(cards: Sequence[Card]) -> str:
    known, priced, unknown = 0.0, 0, 0
    for c in cards:
        known += c.usd or 0.0
        priced += c.usd is not None
        unknown += c.cost == "unknown"
    total = money(known)
    if unknown:  # never show $0 for what nobody priced
        total = f"{total} + {unknown} unpriced" if priced else f"unknown ({unknown} unpriced)"
    return total


def board(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    picks: Mapping[str, int] | None = None,
) -> Board:
    """The :class:`Board` of the run: scenes and shots in manifest order.

    Args:
        run_dir: the run directory (which posters, videos and outputs exist).
        manifest: the manifest with its re-rolled takes
            (:func:`pipeline.manifest.takes.with_rerolls`).
        state: the replayed checkpoint; a shot absent from it is ``pending``.
        picks: the picks in effect (``"<scene>-<shot>"`` -> take); a shot without one has none.
    """
    ids = {s.id for s in manifest.shots}
    chosen = picked_ids(picks or {}, ids)
    scenes: dict[str, Scene] = {}
    groups: dict[str, Group] = {}
    for shot in manifest.shots:
        scene = scenes.get(shot.scene)
        if scene is None:
            scene = scenes[shot.scene] = Scene(len(scenes) + 1, shot.scene)
        c = card(run_dir, shot, state, shot.id in chosen)
        group = groups.get(c.key)
        if group is None:
            group = groups[c.key] = Group(c.key, shot.name, [], None)
            scene.groups.append(group)
        group.cards.append(c)
        if c.picked:
            group.picked = shot.take or 1
    cards = [c for g in groups.values() for c in g.cards]
    tally: dict[str, int] = {}
    for c in cards:
        tally[c.state] = tally.get(c.state, 0) + 1
    stats = [(st.value, tally[st.value]) for st in ShotState if tally.get(st.value)]
    links = [(name, label) for name, label in LINKS if (run_dir / name).is_file()]
    sheets = sheet_files(run_dir)
    if len(sheets) > 1:  # one link per sheet: "contact sheet 1", "2"...
        at = next(i for i, (name, _) in enumerate(links) if name == sheets[0])
        links[at : at + 1] = [(name, f"contact sheet {i}") for i, name in enumerate(sheets, 1)]
    return Board(
        name=manifest.name,
        simulated=bool(state.simulated),
        scenes=list(scenes.values()),
        stats=stats,
        total=_total(cards),
        links=links,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
