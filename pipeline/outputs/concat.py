"""Join MP4 segments encoded with identical settings into one file by copying their packets.

:func:`concat` remuxes with PyAV: each segment's packets are written unchanged, their timestamps
shifted by the length of the segments before it, under one stream whose codec parameters are
the first segment's. That is only valid when every segment was encoded with the same parameters
(codec, size, pixel format, time base and the same SPS/PPS in the extradata): anything else
raises :class:`Incompatible` naming the segment, and :func:`transcode` is the slow, always-valid
way (decode every frame, encode once). Synchronous. Frame counts are frames, rates frames per
second.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import av

from pipeline.outputs.segments import open_encoder


class Incompatible(ValueError):
    """A segment cannot be joined by stream copy.

    Attributes:
        index: its position in the list given to :func:`concat`.
    """

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"segment {index}: {why}")
        self.index = index


def _signature(stream: Any) -> tuple[object, ...]:
    ctx = stream.codec_context
    return (
        ctx.name,
        ctx.width,
        ctx.height,
        ctx.pix_fmt,
        bytes(ctx.extradata or b""),
        stream.time_base,
    )


@lru_cache(maxsize=8)
def encoder_signature(size: tuple[int, int], fps: int) -> tuple[object, ...]:
    """The codec parameters of a segment of ``size`` at ``fps`` (one frame encoded to see them).

    Raises:
        OSError: no temporary file can be written.
    """
    with tempfile.TemporaryDirectory(prefix="pipeline-probe-") as tmp:
        path = Path(tmp) / "probe.mp4"
        with av.open(str(path), mode="w", format="mp4") as out:
            stream = open_encoder(out, size, fps)
            frame = av.VideoFrame(size[0], size[1], "yuv420p")
            frame.pts = 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        with av.open(str(path)) as src:
            return _signature(src.streams.video[0])


def copyable(path: Path, frames: int, fps: int, reference: tuple[object, ...]) -> bool:
    """True when the video at ``path`` can be joined as it is, in place of an encoded segment.

    That is: its first video stream has the ``reference`` codec parameters
    (:func:`encoder_signature`), exactly ``frames`` frames, starts with a keyframe at 0 and has one
    packet every ``1/fps`` s in presentation order (no B-frames). Reads packets, decodes nothing;
    a file that cannot be read is simply not copyable.
    """
    try:
        with av.open(str(path)) as src:
            if not src.streams.video:
                return False
            source = src.streams.video[0]
            if _signature(source) != reference or source.frames != frames or not source.time_base:
                return False
            step = Fraction(1, fps) / source.time_base
            if step.denominator != 1:
                return False
            expected = 0
            for packet in src.demux(source):
                if packet.pts is None:
                    continue
                if packet.pts != expected or packet.dts != expected:
                    return False
                if expected == 0 and not packet.is_keyframe:
                    return False
                expected += int(step)
            return expected == frames * step
    except (OSError, ValueError, av.error.FFmpegError):
        return False


def _add_like(out: av.container.OutputContainer, template: Any) -> Any:
    """An output stream with ``template``'s codec parameters (PyAV 13 and 14+ spell it apart)."""
    from_template = getattr(out, "add_stream_from_template", None)
    if from_template is not None:
        return from_template(template)
    return cast(Any, out).add_stream(template=template)


def concat(parts: Sequence[tuple[Path, int]], dest: Path, fps: int) -> None:
    """Write ``dest`` (MP4, faststart): the segments one after the other, by stream copy.

    Args:
        parts: (segment file, its number of frames) in order; each an MP4 whose first video
            stream starts with a keyframe at time 0 and has no B-frames.
        dest: the file to write (replaced).
        fps: the frame rate every segment was encoded at.

    Raises:
        ValueError: ``parts`` is empty.
        Incompatible: a segment differs from the first in codec parameters, time base or frame
            count, or cannot be read (its index says which).
        OSError: ``dest`` cannot be written.
    """
    if not parts:
        raise ValueError("no segments to join")
    with av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream: Any = None
        reference: tuple[object, ...] | None = None
        offset = 0  # in the segments' time base
        for index, (path, frames) in enumerate(parts):
            try:
                with av.open(str(path)) as src:
                    if not src.streams.video:
                        raise Incompatible(index, "no video stream")
                    source = src.streams.video[0]
                    signature = _signature(source)
                    if reference is None:
                        reference, stream = signature, _add_like(out, source)
                    elif signature != reference:
                        raise Incompatible(index, "other codec parameters than the first")
                    if source.frames != frames:
                        raise Incompatible(index, f"{source.frames} frames, not {frames}")
                    base = source.time_base or Fraction(0)
                    ticks = Fraction(frames, fps) / base if base else Fraction(1, 2)
                    if ticks.denominator != 1:
                        raise Incompatible(index, f"time base {source.time_base} at {fps} fps")
                    for packet in src.demux(source):
                        if packet.dts is None or packet.pts is None:
                            continue  # the demuxer's end-of-stream marker
                        packet.pts += offset
                        packet.dts += offset
                        packet.stream = stream
                        out.mux(packet)
                    offset += int(ticks)
            except av.error.FFmpegError as exc:
                raise Incompatible(index, f"unreadable ({exc})") from exc


def transcode(
    parts: Sequence[tuple[Path, int]], dest: Path, size: tuple[int, int], fps: int
) -> None:
    """Write ``dest`` by decoding every segment and encoding all frames once (the slow way).

    Each segment gives exactly its number of frames (its last frame held if it has fewer), so
    the result has the same length as :func:`concat` would give.

    Raises:
        OSError: ``dest`` cannot be written.
        av.error.FFmpegError: a segment cannot be decoded.
    """
    with av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = open_encoder(out, size, fps)
        rate = Fraction(1, fps)
        index = 0
        for path, frames in parts:
            last = None
            with av.open(str(path)) as src:
                for frame, _ in zip(src.decode(video=0), range(frames), strict=False):
                    last = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                    last.pts, last.time_base = index, rate
                    index += 1
                    out.mux(stream.encode(last))
                    frames -= 1
            while last is not None and frames > 0:
                last.pts, last.time_base = index, rate
                index += 1
                frames -= 1
                out.mux(stream.encode(last))
        out.mux(stream.encode(None))
