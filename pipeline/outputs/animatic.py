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

Encoded as H.264 yuv420p with faststart into a temporary file, then renamed into place. Frames are
streamed one at a time (memory does not grow with the film). Synchronous and CPU-bound: run it in
a worker thread. Sizes are pixels, durations seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageDraw

from pipeline._util.fsutil import replacing
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot, ShotState
from pipeline.outputs.contact_sheet import (
    ACCENT,
    DECODE_ERRORS,
    MUTED,
    TEXT,
    chosen_take,
    draw_text,
    fit_text,
    group_takes,
    shot_video,
    text_width,
)
from pipeline.render.text import load_font

ANIMATIC = "animatic.mp4"


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of the animatic.

    Attributes:
        kind: ``"slate"`` (scene slate), ``"clip"`` (a chosen take) or ``"missing"``.
        title: scene id for a slate, shot id otherwise.
        frames: number of frames at the animatic's rate.
        shot: the chosen take (None for a scene slate).
        reason: for ``missing``: the shot's state (``failed``, ``pending``...).
        detail: extra slate text (scene summary, or the failure message).
    """

    kind: str
    title: str
    frames: int
    shot: Shot | None = None
    reason: str = ""
    detail: str = ""


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
        picks: ``"<scene>-<shot name>"`` -> take number; default take 1 (or the only take).
        fps: animatic frame rate.
        slate_s: scene slate length in seconds (0: no slates).
        run_dir: when given, a done shot whose file is gone becomes ``missing`` as well.
    """
    slate_frames = round(slate_s * fps)
    chosen = [chosen_take(takes, picks) for takes in group_takes(manifest.shots).values()]
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
) -> Path:
    """Write ``RUN_DIR/animatic.mp4`` (H.264, yuv420p, faststart) and return its path.

    Args:
        run_dir: the run directory (shot outputs are relative to it).
        manifest: shot and scene order.
        state: the replayed checkpoint.
        picks: ``"<scene>-<shot name>"`` -> take number; default take 1 (or the only take).
        width: frame width in pixels; the height is 9/16 of it (both rounded to even).
        fps: frame rate; the file has exactly :func:`expected_frames` frames.
        slate_s: length of each scene slate in seconds.

    Raises:
        ValueError: ``width`` below 16, ``fps`` below 1 or a negative ``slate_s``.
        OSError: the file cannot be written. A clip that cannot be decoded is not an error: it
            becomes a ``missing: unreadable`` slate (or, if it breaks mid-way, holds its last
            good frame).
    """
    if fps < 1 or slate_s < 0:
        raise ValueError(f"cannot write an animatic at {fps} fps with {slate_s} s slates")
    size = animatic_size(width)
    segments = plan_animatic(manifest, state, picks, fps, slate_s, run_dir)
    dest = run_dir / ANIMATIC
    with replacing(dest, prefix=".animatic-", suffix=".mp4") as tmp:
        _encode(run_dir, state, segments, size, fps, tmp)
    return dest


def _encode(
    run_dir: Path,
    state: RunState,
    segments: list[Segment],
    size: tuple[int, int],
    fps: int,
    path: Path,
) -> None:
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        index = 0
        for segment in segments:
            for image in _segment_frames(run_dir, state, segment, size, fps):
                frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
                frame.pts = index
                index += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _segment_frames(
    run_dir: Path, state: RunState, segment: Segment, size: tuple[int, int], fps: int
) -> Iterator[Image.Image]:
    """Exactly ``segment.frames`` images of ``size``."""
    if segment.kind == "clip" and segment.shot is not None:
        path, _ = shot_video(run_dir, segment.shot, state)
        if path is not None:
            emitted = 0
            last = None
            try:
                for image in _clip_frames(path, size, fps, segment.frames):
                    last = image
                    emitted += 1
                    yield image
            except DECODE_ERRORS:
                pass  # a clip broken mid-way holds its last good frame
            if last is None:
                segment = Segment("missing", segment.title, segment.frames, reason="unreadable")
            else:
                for _ in range(segment.frames - emitted):
                    yield last
                return
    card = _slate(segment, size)
    for _ in range(segment.frames):
        yield card


def _clip_frames(path: Path, size: tuple[int, int], fps: int, count: int) -> Iterator[Image.Image]:
    """Up to ``count`` frames of ``path`` at ``fps``, letterboxed into ``size``.

    Output frame ``k`` (time ``k / fps`` from the clip's first frame) shows the latest source
    frame that starts at or before it, within a quarter of an output frame. Stops early if the
    clip is shorter than ``count`` frames; the caller holds the last one.
    """
    tolerance = 0.25 / fps
    k = 0
    held: av.VideoFrame | None = None
    held_image: Image.Image | None = None
    first: float | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else k / fps
            first = t if first is None else first
            while held is not None and k < count and k / fps < t - first - tolerance:
                held_image = held_image or _fit(held, size)
                yield held_image
                k += 1
            if k >= count:
                return
            held, held_image = frame, None
    while held is not None and k < count:
        held_image = held_image or _fit(held, size)
        yield held_image
        k += 1


def _fit(frame: av.VideoFrame, size: tuple[int, int]) -> Image.Image:
    """``frame`` scaled (aspect kept, by swscale) and centred on black bars of ``size``."""
    width, height = size
    scale = min(width / frame.width, height / frame.height)
    fit_w = max(2, min(width, round(frame.width * scale)))
    fit_h = max(2, min(height, round(frame.height * scale)))
    scaled = frame.reformat(width=fit_w, height=fit_h, format="rgb24", interpolation="BILINEAR")
    image: Image.Image = scaled.to_image()  # type: ignore[no-untyped-call]
    if (fit_w, fit_h) == size:
        return image
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(image, ((width - fit_w) // 2, (height - fit_h) // 2))
    return canvas


def _slate(segment: Segment, size: tuple[int, int]) -> Image.Image:
    """A scene slate (dark grey, scene name large) or a black ``missing`` card."""
    width, height = size
    missing = segment.kind != "slate"
    card = Image.new("RGB", size, (0, 0, 0) if missing else (18, 19, 23))
    draw = ImageDraw.Draw(card)
    big = load_font(max(10, height // (14 if missing else 7)))
    small = load_font(max(8, height // 24))
    big_size = int(getattr(big, "size", 10))
    room = width - width // 8
    if missing:
        title = fit_text(
            f"{segment.title} — missing: {segment.reason.replace('_', ' ')}", big, room
        )
        colour = (236, 110, 100)
    else:
        title = fit_text(segment.title, big, room)
        colour = TEXT
    top = height // 2 - big_size
    draw_text(draw, ((width - text_width(title, big)) // 2, top), title, big, colour)
    if not missing:
        bar_w = max(8, width // 12)
        bar_y = top - big_size // 2
        draw.rectangle([(width - bar_w) // 2, bar_y, (width + bar_w) // 2, bar_y + 2], fill=ACCENT)
    if segment.detail:
        detail = fit_text(segment.detail, small, room)
        y = top + int(big_size * 1.6)
        draw_text(draw, ((width - text_width(detail, small)) // 2, y), detail, small, MUTED)
    return card
