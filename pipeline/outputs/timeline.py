"""The editor hand-off: a run as an OpenTimelineIO timeline (``RUN_DIR/timeline.otio``).

``build_timeline(run_dir, manifest, state, picks)`` lays the run out the way the animatic does,
but as an edit an editor can open and change::

    track "other takes 2"   [gap .........] [s02-t3] [gap ...................]
    track "other takes 1"   [gap .........] [s02-t2] [gap ..] [m-s02-t2] [gap]
    track "chosen takes"    [s01] [s02-t1 (picked)] [s03] [m-s01] [m-s02-t1] [gap: m-s03 missing]
    markers (on the stack)  ^dawn                        ^market

- the **chosen track** (the top video track, so it is what plays) has one item per shot in
  manifest order: a clip of the chosen take (see :mod:`pipeline.outputs.picks`) or, for a shot
  without a readable video, a **gap** of the shot's requested duration named
  ``"<shot id> (missing: <state>)"``;
- every clip has its **real length and frame rate, read from the file with PyAV**: its source
  range is ``0 .. frames`` at the file's rate, and so is its media reference's available range;
- the other takes of a shot are clips on the tracks below, starting where the shot starts
  (an other take longer than the chosen one is cut to its length; its available range keeps
  the whole file);
- one marker per scene on the timeline's stack, at the scene's first shot, named by the scene;
- each clip's and gap's metadata ``{"pipeline": {shot, scene, name, take, chosen, prompt,
  provider, model, seed, duration_s, aspect_ratio}}`` (no URL, no key: registered secrets are
  masked); a gap adds ``missing`` (the shot's state, or ``unreadable``);
- media references are absolute ``file://`` URLs (percent-encoded), what Resolve, Premiere and
  Final Cut open: moving the run directory means rebuilding the timeline
  (``pipeline storyboard RUN_DIR`` or ``pipeline export RUN_DIR``).

The rate of gaps and of the timeline is the most common frame rate of the chosen clips (24 fps
when there is none). :mod:`pipeline.outputs.timeline_export` turns the timeline into an EDL or
an XML. OpenTimelineIO is imported only when a timeline is built. Times are frames at the rate
named beside them; durations in manifests are whole seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline._util.fsutil import replacing
from pipeline._util.redaction import scrub
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot
from pipeline.outputs.cache import OutputCache, entry_key
from pipeline.outputs.sources import DECODE_ERRORS, chosen_take, group_takes, shot_video
from pipeline.render.clips import probe

if TYPE_CHECKING:
    import opentimelineio as otio

TIMELINE = "timeline.otio"
#: Name of the track with the chosen take of every shot (the top video track).
CHOSEN_TRACK = "chosen takes"
#: Metadata namespace of everything this module adds.
NAMESPACE = "pipeline"
#: Rate of the timeline when no shot has a video.
DEFAULT_RATE = 24.0


def other_track(n: int) -> str:
    """Name of the track with the ``n``-th other take of each shot (``n`` from 1)."""
    return f"other takes {n}"


@dataclass(frozen=True, slots=True)
class Media:
    """A verified video as an editor sees it.

    Attributes:
        path: absolute path of the file.
        fps: frame rate read from the file (frames per second).
        frames: number of frames in the file.
    """

    path: Path
    fps: float
    frames: int


@dataclass(frozen=True, slots=True)
class Slot:
    """One shot of the timeline.

    Attributes:
        shot: the chosen take (the only take of a single-take shot).
        media: its video, or None when it has none.
        reason: ``"done"``, or why there is no video (the shot's state, ``"file not found"``,
            ``"unreadable"``).
        others: the shot's other takes that have a video, in take order.
    """

    shot: Shot
    media: Media | None
    reason: str
    others: tuple[tuple[Shot, Media], ...] = ()


def shot_media(
    run_dir: Path, shot: Shot, state: RunState, cache: OutputCache | None = None
) -> tuple[Media | None, str]:
    """The shot's verified video with its real rate and length, or why there is none.

    With ``cache``, the rate and length of a video already probed are the cache's (kept by the
    video's identity, :meth:`OutputCache.video_id`): the file is not opened again.

    Returns:
        ``(media, "done")``, or ``(None, reason)`` (see :attr:`Slot.reason`). A file PyAV cannot
        read, or one without frames, is ``"unreadable"``: never an error.
    """
    path, reason = shot_video(run_dir, shot, state)
    if path is None:
        return None, reason
    key = _probe_key(cache, state, shot)
    answer = cache.read("probe", key, count=False) if cache and key else None
    try:
        fps, frames = json.loads(answer) if answer is not None else (None, None)
    except ValueError:
        fps = frames = None
    if not isinstance(fps, float) or not isinstance(frames, int):
        try:
            info = probe(path)
        except DECODE_ERRORS:
            return None, "unreadable"
        fps, frames = info.fps, info.frames
        if cache is not None and key is not None and frames > 0 and fps > 0:
            cache.store("probe", key, ".json", json.dumps([fps, frames]).encode(), count=False)
    if frames <= 0 or fps <= 0:
        return None, "unreadable"
    return Media(path.resolve(), fps, frames), "done"


def _probe_key(cache: OutputCache | None, state: RunState, shot: Shot) -> str | None:
    """The cache key of a done shot's rate and length (None: no cache, or no identity)."""
    if cache is None:
        return None
    try:
        video = cache.video_id(state.shots[shot.id])
    except OSError:
        return None
    return entry_key("probe", video=video) if video is not None else None


def plan_timeline(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    picks: Mapping[str, int] | None = None,
    cache: OutputCache | None = None,
) -> list[Slot]:
    """One :class:`Slot` per shot in manifest order (each video probed once with PyAV).

    Args:
        run_dir: the run directory (shot outputs are relative to it).
        manifest: shot order; the takes of a shot are adjacent.
        state: the replayed checkpoint.
        picks: ``"<scene>-<shot name>"`` -> take number; no pick: see :func:`chosen_take`.
        cache: the outputs' cache: videos probed before are not opened again.
    """
    slots = []
    for takes in group_takes(manifest.shots).values():
        chosen = chosen_take(takes, picks, state)
        media, reason = shot_media(run_dir, chosen, state, cache)
        others = []
        for take in takes:
            if take is not chosen:
                other, _ = shot_media(run_dir, take, state, cache)
                if other is not None:
                    others.append((take, other))
        slots.append(Slot(chosen, media, reason, tuple(others)))
    return slots


def timeline_rate(slots: list[Slot]) -> float:
    """The most common frame rate of the chosen videos (the first seen on a tie), else 24."""
    rates = Counter(s.media.fps for s in slots if s.media is not None)
    return rates.most_common(1)[0][0] if rates else DEFAULT_RATE


def shot_metadata(shot: Shot, *, chosen: bool) -> dict[str, Any]:
    """What an editor needs to know about a take: ``{"pipeline": {...}}`` (no URL, no key)."""
    return {
        NAMESPACE: {
            "shot": shot.id,
            "scene": shot.scene,
            "name": shot.name,
            "take": shot.take,
            "chosen": chosen,
            "prompt": scrub(shot.prompt),
            "provider": shot.provider,
            "model": shot.model,
            "seed": shot.seed,
            "duration_s": shot.duration,
            "aspect_ratio": shot.aspect_ratio,
        }
    }


def build_timeline(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    picks: Mapping[str, int] | None = None,
    cache: OutputCache | None = None,
) -> otio.schema.Timeline:
    """The run as an OpenTimelineIO timeline (layout in the module docstring).

    Args:
        run_dir: the run directory.
        manifest: shots and scenes in order.
        state: the replayed checkpoint.
        picks: ``"<scene>-<shot name>"`` -> take number; no pick: see :func:`chosen_take`.
        cache: the outputs' cache (see :func:`plan_timeline`).

    Returns:
        A timeline named after the manifest, starting at frame 0, whose stack holds the other-take
        tracks (bottom) and the chosen track (top), with one marker per scene.
    """
    import opentimelineio as otio

    slots = plan_timeline(run_dir, manifest, state, picks, cache)
    rate = timeline_rate(slots)
    chosen = otio.schema.Track(name=CHOSEN_TRACK, kind=otio.schema.TrackKind.Video)
    starts: list[otio.opentime.RationalTime] = []
    markers = []
    cursor = otio.opentime.RationalTime(0, rate)
    scene = None
    for slot in slots:
        starts.append(cursor)
        if slot.shot.scene != scene:
            scene = slot.shot.scene
            markers.append(
                otio.schema.Marker(
                    name=scene,
                    marked_range=otio.opentime.TimeRange(
                        cursor, otio.opentime.RationalTime(0, rate)
                    ),
                    color=otio.schema.MarkerColor.BLUE,
                    metadata={NAMESPACE: {"scene": scene}},
                )
            )
        if slot.media is not None:
            item = _clip(slot.shot, slot.media, slot.media.frames, chosen=True)
        else:
            item = _gap(slot.shot, slot.reason, slot.shot.duration * rate, rate)
        chosen.append(item)
        cursor = cursor + item.duration()
    others = [_other_track(slots, starts, chosen, n) for n in range(_most_others(slots))]
    stack = otio.schema.Stack(children=[*reversed(others), chosen])
    stack.markers.extend(markers)
    timeline = otio.schema.Timeline(
        name=manifest.name,
        global_start_time=otio.opentime.RationalTime(0, rate),
        metadata={NAMESPACE: {"run": run_dir.name, "simulated": bool(state.simulated)}},
    )
    timeline.tracks = stack
    return timeline


def _most_others(slots: list[Slot]) -> int:
    return max((len(s.others) for s in slots), default=0)


def _clip(shot: Shot, media: Media, frames: int, *, chosen: bool) -> otio.schema.Clip:
    """A clip of ``frames`` frames (at the file's rate) from the start of ``media``."""
    import opentimelineio as otio

    zero = otio.opentime.RationalTime(0, media.fps)
    reference = otio.schema.ExternalReference(
        target_url=media.path.as_uri(),
        available_range=otio.opentime.TimeRange(
            zero, otio.opentime.RationalTime(media.frames, media.fps)
        ),
    )
    reference.name = media.path.name
    return otio.schema.Clip(
        name=shot.id,
        media_reference=reference,
        source_range=otio.opentime.TimeRange(zero, otio.opentime.RationalTime(frames, media.fps)),
        metadata=shot_metadata(shot, chosen=chosen),
    )


def _gap(shot: Shot, reason: str, frames: float, rate: float) -> otio.schema.Gap:
    import opentimelineio as otio

    meta = shot_metadata(shot, chosen=True)
    meta[NAMESPACE]["missing"] = reason
    gap = otio.schema.Gap(duration=otio.opentime.RationalTime(round(frames), rate))
    gap.name = f"{shot.id} (missing: {reason})"
    gap.metadata.update(meta)
    return gap


def _other_track(
    slots: list[Slot],
    starts: list[otio.opentime.RationalTime],
    chosen: otio.schema.Track,
    n: int,
) -> otio.schema.Track:
    """The ``n``-th (from 0) other take of every shot, each where its shot starts."""
    import opentimelineio as otio

    track = otio.schema.Track(name=other_track(n + 1), kind=otio.schema.TrackKind.Video)
    rate = starts[0].rate if starts else DEFAULT_RATE
    cursor = otio.opentime.RationalTime(0, rate)
    for slot, start, item in zip(slots, starts, chosen, strict=True):
        if len(slot.others) <= n:
            continue
        shot, media = slot.others[n]
        if start > cursor:
            track.append(_plain_gap((start - cursor).rescaled_to(rate)))
        room = item.duration().rescaled_to(media.fps).value
        clip = _clip(shot, media, min(media.frames, int(room + 1e-6)), chosen=False)
        track.append(clip)
        cursor = start + clip.duration()
    return track


def _plain_gap(duration: otio.opentime.RationalTime) -> otio.schema.Gap:
    import opentimelineio as otio

    return otio.schema.Gap(
        duration=otio.opentime.RationalTime(round(duration.value), duration.rate)
    )


def write_timeline(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
    cache: OutputCache | None = None,
) -> Path:
    """Write ``RUN_DIR/timeline.otio`` (OTIO JSON, mode 0644) atomically; returns its path.

    ``cache``: the outputs' cache (see :func:`plan_timeline`).

    Raises:
        OSError: the file cannot be written.
    """
    dest = run_dir / TIMELINE
    replace_text(dest, to_otio_json(build_timeline(run_dir, manifest, state, picks, cache)))
    return dest


def to_otio_json(timeline: otio.schema.Timeline) -> str:
    """``timeline`` as OTIO JSON text."""
    import opentimelineio as otio

    text: str = otio.adapters.write_to_string(timeline, adapter_name="otio_json")
    return text


def replace_text(dest: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically, mode 0644.

    0644: an editor on another account reads it. A killed write leaves ``.<name>.*.tmp``, which
    the next rebuild sweeps.

    Raises:
        OSError: the file cannot be written.
    """
    with replacing(dest, mode=0o644) as tmp:
        tmp.write_text(text, encoding="utf-8")
