"""One piece of the animatic, encoded on its own: a scene slate, a chosen take, or a missing shot.

Every segment is an MP4 of exactly ``Segment.frames`` frames encoded with the same settings
(:data:`ENCODER`: H.264 yuv420p, no B-frames, one size and frame rate per animatic), so the
animatic is cut by copying their packets one after the other (:mod:`pipeline.outputs.concat`)
and a changed pick re-encodes nothing but the segment it brings in. Segments are kept in the
outputs' cache (:mod:`pipeline.outputs.cache`), keyed by the video's sha256 and these settings.

A take is decoded with PyAV and resampled by timestamp (frames dropped or held) to the animatic's
rate, scaled to fit with its aspect kept and black bars (21:9 letterboxed, 9:16 pillarboxed); a
clip of the animatic's own size is passed through without a trip through Pillow. Synchronous and
CPU-bound. Sizes are pixels, durations seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
from PIL import Image, ImageDraw

from pipeline.models import Shot
from pipeline.outputs.drawing import ACCENT, MUTED, TEXT, draw_text, fit_text, text_width
from pipeline.outputs.sources import DECODE_ERRORS
from pipeline.render.clips import H264
from pipeline.render.text import load_font

#: The settings every segment is encoded with (part of each segment's cache key): those of the
#: rendered previs clips (:data:`pipeline.render.clips.H264`), so such a clip of the animatic's
#: size and rate can stand as its own segment (:func:`pipeline.outputs.concat.copyable`).
ENCODER = {"codec": "libx264", "pix_fmt": "yuv420p", **H264}
#: Black in limited-range YUV (Y, U, V): the bars around a letterboxed clip.
_BLACK = (16, 128, 128)


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


def open_encoder(
    out: av.container.OutputContainer, size: tuple[int, int], fps: int
) -> av.video.stream.VideoStream:
    """Add the video stream every segment shares (:data:`ENCODER`) to ``out``; returns it."""
    stream = out.add_stream("libx264", rate=fps)  # ENCODER["codec"]
    stream.width, stream.height = size
    stream.pix_fmt = ENCODER["pix_fmt"]
    stream.options = dict(H264)
    return stream


def encode_segment(
    segment: Segment, video: Path | None, size: tuple[int, int], fps: int, dest: Path
) -> None:
    """Write ``segment`` as an MP4 of exactly ``segment.frames`` frames of ``size`` at ``fps``.

    Args:
        segment: what to show.
        video: the take's verified video for a ``clip`` segment (else None). One that cannot be
            decoded becomes a ``missing: unreadable`` slate of the same length; one that breaks
            mid-way holds its last good frame.
        size: (width, height), both even.
        fps: frames per second.
        dest: the file to write (replaced).

    Raises:
        OSError: ``dest`` cannot be written.
    """
    with av.open(str(dest), mode="w", format="mp4") as out:
        stream = open_encoder(out, size, fps)
        rate = Fraction(1, fps)
        for index, frame in enumerate(_segment_frames(segment, video, size, fps)):
            frame.pts, frame.time_base = index, rate  # a decoded frame has its clip's time base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _segment_frames(
    segment: Segment, video: Path | None, size: tuple[int, int], fps: int
) -> Iterator[av.VideoFrame]:
    """Exactly ``segment.frames`` frames of ``size``."""
    if segment.kind == "clip" and video is not None:
        emitted = 0
        last = None
        try:
            for frame in _clip_frames(video, size, fps, segment.frames):
                last = frame
                emitted += 1
                yield frame
        except DECODE_ERRORS:
            pass  # a clip broken mid-way holds its last good frame
        if last is not None:
            for _ in range(segment.frames - emitted):
                yield last
            return
        segment = Segment("missing", segment.title, segment.frames, reason="unreadable")
    card = av.VideoFrame.from_image(_slate(segment, size))  # type: ignore[no-untyped-call]
    card = card.reformat(format=ENCODER["pix_fmt"])
    for _ in range(segment.frames):
        yield card


def _clip_frames(
    path: Path, size: tuple[int, int], fps: int, count: int
) -> Iterator[av.VideoFrame]:
    """Up to ``count`` frames of ``path`` at ``fps``, letterboxed into ``size``.

    Output frame ``k`` (time ``k / fps`` from the clip's first frame) shows the latest source
    frame that starts at or before it, within a quarter of an output frame. Stops early if the
    clip is shorter than ``count`` frames; the caller holds the last one.
    """
    tolerance = 0.25 / fps
    k = 0
    held: av.VideoFrame | None = None
    fitted: av.VideoFrame | None = None
    first: float | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else k / fps
            first = t if first is None else first
            while held is not None and k < count and k / fps < t - first - tolerance:
                fitted = fitted or _fit(held, size)
                yield fitted
                k += 1
            if k >= count:
                return
            held, fitted = frame, None
    while held is not None and k < count:
        fitted = fitted or _fit(held, size)
        yield fitted
        k += 1


def _fit(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """``frame`` in yuv420p, scaled (aspect kept, by swscale) and centred on black bars."""
    width, height = size
    if (frame.width, frame.height) == size:
        return frame.reformat(format=ENCODER["pix_fmt"])
    scale = min(width / frame.width, height / frame.height)
    fit_w = max(2, min(width, round(frame.width * scale / 2) * 2))
    fit_h = max(2, min(height, round(frame.height * scale / 2) * 2))
    smaller = fit_w <= frame.width  # AREA: sharper and cheaper than bilinear when shrinking
    how = "AREA" if smaller else "BILINEAR"
    scaled = frame.reformat(width=fit_w, height=fit_h, format="yuv420p", interpolation=how)
    return scaled if (fit_w, fit_h) == size else _pad(scaled, size)


def _pad(src: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """``src`` (yuv420p, even sizes no larger than ``size``) centred on black, plane by plane."""
    width, height = size
    out = av.VideoFrame(width, height, "yuv420p")
    left, top = (width - src.width) // 4 * 2, (height - src.height) // 4 * 2  # even: chroma
    for index, fill in enumerate(_BLACK):
        plane, source = out.planes[index], src.planes[index]
        sub = 1 if index == 0 else 2
        buf = bytearray([fill]) * plane.buffer_size
        view, stride, line = memoryview(source), source.line_size, plane.line_size
        run, x, y = src.width // sub, left // sub, top // sub
        for row in range(src.height // sub):
            start = (y + row) * line + x
            buf[start : start + run] = view[row * stride : row * stride + run]
        plane.update(cast(bytes, buf))  # any buffer will do
    return out


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
