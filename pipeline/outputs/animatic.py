"""The animatic: the chosen take of every shot cut together in manifest order, with scene slates.

``write_animatic(run_dir, manifest, state)`` writes ``RUN_DIR/animatic.mp4``::

    [slate: scene 1] [shot 1, chosen take] [shot 2] ... [slate: scene 2] [shot 5] [missing] ...

- one resolution for the whole film: ``width`` x ``width * 9/16`` (even sizes); every clip is
  scaled to fit with its aspect kept and black bars (21:9 letterboxed, 9:16 pillarboxed);
- one frame rate: each clip is decoded with PyAV and resampled by timestamp (frames dropped or
  held), so a shot of ``D`` seconds is exactly ``D * fps`` frames whatever the clip's own rate or
  length (a short clip holds its last frame; a long one is cut);
- a slate of ``round(slate_s * fps)`` frames opens every scene; a shot without a readable video
  is a black slate of its own duration naming it (``"dawn-s03 — missing: failed"``).

Each piece is a **segment** encoded on its own with the same settings
(:mod:`pipeline.outputs.segments`) and kept in the outputs' cache (:mod:`pipeline.outputs.cache`)
by the take's video sha256 and those settings; the film is their packets copied one after the
other (:mod:`pipeline.outputs.concat`), H.264 yuv420p with faststart, into a temporary file
renamed into place. So a rebuild encodes only the segments that changed (a new pick: the take it
brings in, if it was never cut before), and nothing at all when the film would be the same.
Synchronous and CPU-bound: run it in a worker thread. Sizes are pixels, durations seconds.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pipeline._util.fsutil import readable_by_all, replacing
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot, ShotState
from pipeline.outputs.cache import OutputCache, entry_key, own_cache
from pipeline.outputs.concat import (
    Incompatible,
    concat,
    copyable,
    encoder_signature,
    transcode,
)
from pipeline.outputs.segments import ENCODER, encode_segment
from pipeline.outputs.segments import Segment as Segment
from pipeline.outputs.sources import chosen_take, group_takes, shot_video

log = logging.getLogger("pipeline")

ANIMATIC = "animatic.mp4"


def plan_animatic(
    manifest: Manifest,
    state: RunState,
    picks: Mapping[str, int] | None,
    fps: int,
    slate_s: float,
    run_dir: Path | None = None,
) -> list[Segment]:
    """The animatic's segments in order: a slate per scene, then one segment per shot.

    Args:
        manifest: shots in manifest order (takes of a shot are adjacent).
        state: the replayed checkpoint (which takes are done).
        picks: ``"<scene>-<shot name>"`` -> take number; no pick: see :func:`chosen_take`.
        fps: animatic frame rate.
        slate_s: scene slate length in seconds (0: no slates).
        run_dir: when given, a done shot whose file is gone becomes ``missing`` as well.
    """
    slate_frames = round(slate_s * fps)
    groups = group_takes(manifest.shots).values()
    chosen = [chosen_take(takes, picks, state) for takes in groups]
    scenes: dict[str, list[Shot]] = {}
    for shot in chosen:
        scenes.setdefault(shot.scene, []).append(shot)
    segments: list[Segment] = []
    scene = None
    for shot in chosen:
        if shot.scene != scene and slate_frames > 0:
            mine = scenes[shot.scene]
            detail = (
                f"scene {list(scenes).index(shot.scene) + 1} of {len(scenes)} · "
                f"{len(mine)} shots · {sum(s.duration for s in mine)} s"
            )
            segments.append(Segment("slate", shot.scene, slate_frames, detail=detail))
        scene = shot.scene
        segments.append(_shot_segment(shot, state, fps, run_dir))
    return segments


def _shot_segment(shot: Shot, state: RunState, fps: int, run_dir: Path | None) -> Segment:
    rec = state.shots.get(shot.id)
    if run_dir is not None:
        reason = shot_video(run_dir, shot, state)[1]
    elif rec is None:
        reason = ShotState.PENDING.value
    else:
        reason = "done" if rec.state == ShotState.DONE and rec.output else rec.state.value
    frames = shot.duration * fps
    if reason == "done":
        return Segment("clip", shot.id, frames, shot=shot)
    error = rec.error if rec is not None and rec.error else ""
    return Segment("missing", shot.id, frames, shot, reason, error)


def expected_frames(
    manifest: Manifest,
    state: RunState,
    picks: Mapping[str, int] | None = None,
    fps: int = 12,
    slate_s: float = 1.0,
) -> int:
    """Number of frames :func:`write_animatic` writes with the same arguments.

    The sum of ``duration * fps`` over the chosen take of every shot (done or not) plus
    ``round(slate_s * fps)`` per scene.
    """
    return sum(s.frames for s in plan_animatic(manifest, state, picks, fps, slate_s))


def animatic_size(width: int) -> tuple[int, int]:
    """Frame size of a 16:9 animatic ``width`` pixels wide, both sides even.

    Raises:
        ValueError: ``width`` is below 16.
    """
    if width < 16:
        raise ValueError(f"animatic width must be at least 16 px, got {width}")
    even_w = width // 2 * 2
    return even_w, max(2, round(even_w * 9 / 16 / 2) * 2)


def write_animatic(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
    width: int = 640,
    fps: int = 12,
    slate_s: float = 1.0,
    cache: OutputCache | None = None,
) -> Path:
    """Write ``RUN_DIR/animatic.mp4`` (H.264, yuv420p, faststart) and return its path.

    Args:
        run_dir: the run directory (shot outputs are relative to it).
        manifest: shot and scene order.
        state: the replayed checkpoint.
        picks: ``"<scene>-<shot name>"`` -> take number; no pick: see :func:`chosen_take`.
        width: frame width in pixels; the height is 9/16 of it (both rounded to even).
        fps: frame rate; the file has exactly :func:`expected_frames` frames.
        slate_s: length of each scene slate in seconds.
        cache: the rebuild's cache (None: the run directory's own, saved before returning).

    Raises:
        ValueError: ``width`` below 16, ``fps`` below 1 or a negative ``slate_s``.
        OSError: the file cannot be written. A clip that cannot be decoded is not an error: it
            becomes a ``missing: unreadable`` slate (or, if it breaks mid-way, holds its last
            good frame).
    """
    if fps < 1 or slate_s < 0:
        raise ValueError(f"cannot write an animatic at {fps} fps with {slate_s} s slates")
    size = animatic_size(width)
    cache, owned = own_cache(run_dir, cache)
    pieces = [
        _keyed(cache, state, seg, size, fps)
        for seg in plan_animatic(manifest, state, picks, fps, slate_s, run_dir)
    ]
    key = entry_key("animatic", parts=[k for _, k, _ in pieces], size=list(size), fps=fps)
    dest = run_dir / ANIMATIC
    if cache.current(dest, key):
        readable_by_all(dest)  # an older version wrote it 0600
        cache.stats.kept["animatic"] += 1
    else:
        with replacing(dest, mode=0o644, prefix=".animatic-", suffix=".mp4") as tmp:  # linked
            _cut(cache, pieces, size, fps, tmp)
        cache.record(dest, key)
        cache.stats.written["animatic"] += 1
    if owned:
        cache.save()
    return dest


#: A segment with its cache key and, for a clip, its video.
_Piece = tuple[Segment, str, Path | None]


def _keyed(
    cache: OutputCache, state: RunState, seg: Segment, size: tuple[int, int], fps: int
) -> _Piece:
    """The segment's cache key: the video's content for a clip, the text for a slate."""
    common = {"frames": seg.frames, "size": list(size), "fps": fps, "encoder": ENCODER}
    video = None
    if seg.kind == "clip" and seg.shot is not None:
        rec = state.shots[seg.shot.id]
        try:
            identity = cache.video_id(rec)
        except OSError:
            identity = None
        if identity is not None:
            video = cache.run_dir / (rec.output or "")
            return seg, entry_key("segment", video=identity, **common), video
        seg = Segment("missing", seg.title, seg.frames, seg.shot, "unreadable")
    key = entry_key(
        "segment", kind=seg.kind, title=seg.title, reason=seg.reason, detail=seg.detail, **common
    )
    return seg, key, video


def _segment_file(
    cache: OutputCache, piece: _Piece, size: tuple[int, int], fps: int
) -> tuple[Path, int]:
    """The segment's file and its frame count.

    The take's own video when it can be joined as it is
    (:func:`~pipeline.outputs.concat.copyable`), else its verified cache entry, encoded on a miss.
    """
    seg, key, video = piece
    if video is not None and _copyable(cache, key, video, seg.frames, size, fps):
        cache.stats.copied["segment"] += 1
        return video, seg.frames
    found = cache.path("segment", key)
    if found is None:
        folder = cache.root / "segment"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".segment-", suffix=".mp4", dir=folder)
        os.close(fd)
        try:
            encode_segment(seg, video, size, fps, Path(name))
            found = cache.store_file("segment", key, ".mp4", Path(name))
        finally:
            Path(name).unlink(missing_ok=True)
    return found, seg.frames


def _copyable(
    cache: OutputCache, key: str, video: Path, frames: int, size: tuple[int, int], fps: int
) -> bool:
    """Whether the take's video can stand as its segment; the answer is kept in the cache."""
    answer = cache.read("copyable", key, count=False)  # key: the video's content and settings
    if answer not in (b"yes", b"no"):
        fits = copyable(video, frames, fps, encoder_signature(size, fps))
        answer = b"yes" if fits else b"no"
        cache.store("copyable", key, ".txt", answer, count=False)
    return answer == b"yes"


def _cut(
    cache: OutputCache, pieces: list[_Piece], size: tuple[int, int], fps: int, dest: Path
) -> None:
    """Join the pieces' segments into ``dest``: by stream copy, else (once) by re-encoding."""
    if not pieces:
        transcode([], dest, size, fps)
        return
    for attempt in range(2):
        parts = [_segment_file(cache, piece, size, fps) for piece in pieces]
        try:
            concat(parts, dest, fps)
            return
        except Incompatible as exc:
            # A segment from another build (another encoder) or damaged in a way its tag could
            # not show: build it again; if joining still fails, re-encode the whole film.
            then = "encoding it again" if attempt == 0 else "re-encoding the whole animatic"
            log.info("animatic: %s; %s", exc, then)
            cache.evict("segment", pieces[exc.index][1])
            if exc.index > 0:
                cache.evict("segment", pieces[0][1])
    parts = [_segment_file(cache, piece, size, fps) for piece in pieces]
    transcode(parts, dest, size, fps)
