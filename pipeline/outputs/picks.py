"""Chosen takes: which take of each multi-take shot the animatic, the sheet and the page use.

The checkpoint is the source of truth: ``take_picked`` records (``pipeline pick``, ``pipeline
review``) fold into :attr:`RunState.picks <pipeline.journal.state.RunState>`. Runs made before
kept their picks only in ``RUN_DIR/picks.json`` (``{"<scene>-<shot>": take}``); those still count
for every shot the checkpoint has no pick of. ``pipeline pick`` writes both. A shot without a
pick has none: the page and the sheet mark nothing, and the animatic and the timeline cut in
its first take that is done and not rejected (:func:`pipeline.outputs.sources.chosen_take`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ManifestError
from pipeline.journal.inbox import Request
from pipeline.journal.state import RunState
from pipeline.models import Event
from pipeline.outputs.report import picked_ids as picked_ids
from pipeline.outputs.report import write_json_atomic

if TYPE_CHECKING:  # `status` reads picks without loading the manifest loader
    from pipeline.manifest.loader import Manifest

PICKS = "picks.json"


def read_picks(run_dir: Path, state: RunState | None = None) -> dict[str, int]:
    """The picks in effect: ``picks.json`` overlaid with the checkpoint's (``state``).

    A damaged or missing ``picks.json`` counts as no picks; a pick the checkpoint cleared
    (take 0) is absent.
    """
    try:
        data = json.loads((run_dir / PICKS).read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    legacy = data if isinstance(data, dict) else {}
    picks = {str(k): v for k, v in legacy.items() if v.__class__ is int}
    if state is not None:
        picks.update(state.picks)
    return {k: v for k, v in picks.items() if v > 0}


def _takes(manifest: Manifest) -> dict[str, list[int]]:
    """Take numbers of every shot that has more than one take (a re-rolled one included)."""
    groups: dict[str, list[int]] = {}
    for s in manifest.shots:
        groups.setdefault(f"{s.scene}-{s.name}", []).append(s.take or 1)
    return {k: v for k, v in groups.items() if len(v) > 1}


def check_take(manifest: Manifest, shot: str, take: int) -> None:
    """Check that ``shot`` (``<scene>-<shot>``) has a take ``take`` in ``manifest``.

    Raises:
        ManifestError: it has not (the message lists the shots with takes).
    """
    takes = _takes(manifest)
    if take not in takes.get(shot, []):
        known = ", ".join(f"{k} ({', '.join(map(str, v))})" for k, v in takes.items()) or "none"
        raise ManifestError.single(
            str(manifest.path),
            None,
            "SHOT TAKE",
            f"{shot} has no take {take}; shots with takes: {known}",
        )


def take_id(manifest: Manifest, shot: str, take: int) -> str:
    """The id of take ``take`` of shot ``shot`` in ``manifest`` (checked: :func:`check_take`)."""
    check_take(manifest, shot, take)
    return next(
        s.id for s in manifest.shots if f"{s.scene}-{s.name}" == shot and (s.take or 1) == take
    )


def pick_request(manifest: Manifest, shot: str, take: int) -> Request:
    """The ``take_picked`` request of take ``take`` of ``shot``, for :mod:`pipeline.journal.inbox`.

    Raises:
        ManifestError: as :func:`check_take`.
    """
    return Request(Event.TAKE_PICKED, take_id(manifest, shot, take), {"key": shot, "take": take})


def set_pick(run_dir: Path, manifest: Manifest, shot: str, take: int) -> dict[str, int]:
    """Write ``take`` as the chosen take of ``shot`` (``<scene>-<shot>``) into ``picks.json``.

    The checkpoint's ``take_picked`` record is the caller's (:func:`pick_request`); this keeps
    ``picks.json`` for scripts that read it. Returns what the file now holds.

    Raises:
        ManifestError: the shot has no such take (the message lists the shots with takes).
    """
    check_take(manifest, shot, take)
    try:
        data = json.loads((run_dir / PICKS).read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    picks = {str(k): v for k, v in data.items() if v.__class__ is int}
    picks[shot] = take
    write_json_atomic(run_dir / PICKS, picks)
    return picks
