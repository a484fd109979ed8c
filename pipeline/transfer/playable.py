"""Is a fetched video playable? Demux it end to end, decode its ends, compare its duration.

A container signature (``ftyp`` at offset 4) is not a video: a cut transfer or a provider's
broken encode still has one. Before a fetched video is recorded and renamed to its final name,
:func:`check` (blocking: call it in a worker thread) opens it with PyAV and:

1. demuxes every packet of its first video stream, refusing a demuxing error, an incomplete
   (corrupt) packet, or fewer packets than the container's sample table announces (a file
   truncated after its ``moov`` box);
2. decodes the first frame (the first packets, until the decoder gives a frame) and the last
   frames (a seek to the last keyframe, then that group of pictures to the end): the cost is
   one read of the file plus at most two groups of pictures, whatever the video's length;
3. measures the duration from the packets' timestamps and compares it with the shot's
   ``duration`` within the provider's :data:`TOLERANCES` (providers round: a "5 s" clip may be
   4.8 or 5.04 s).

A failure raises :class:`UnplayableVideo`, a :class:`~pipeline.errors.FetchError` that is *not*
``rejected``: the fetch retry loop fetches the video again (free), and once its retries are spent
the shot fails ``download_rejected`` with this reason. It is never resubmitted.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import FetchError

# PyAV (``import av.error`` in the functions) is imported by the first check, not by every
# command that might fetch: 50 ms of `pipeline run`'s start-up.


class UnplayableVideo(FetchError):
    """A fetched body that is not a playable video of the asked duration.

    Retried as a fetch (a cut transfer is one cause); after the retries the shot fails
    ``download_rejected`` with this message, never resubmitted.
    """


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a video's duration may be from the asked one: ``max(seconds, fraction * asked)``.

    Attributes:
        seconds: absolute allowance in seconds.
        fraction: allowance as a fraction of the asked duration.
    """

    seconds: float = 1.0
    fraction: float = 0.2

    def allowed(self, asked_s: float) -> float:
        """The allowed difference in seconds for an asked duration of ``asked_s`` seconds."""
        return max(self.seconds, self.fraction * asked_s)


#: Any provider not in :data:`TOLERANCES`: max(1 s, 20 %). Providers round to their own frame
#: grid and encoder GOPs (24 fps, 4.8 s for "5 s"; 121 frames at 24 fps for "5 s"); a second or
#: a fifth is far below what a cut transfer or a wrong model variant looks like.
DEFAULT_TOLERANCE = Tolerance()

#: Tolerance per provider registry name. Independent of ``ProviderSettings`` on purpose: it
#: describes what the provider delivers, not how we call it. ``local`` renders exactly
#: ``duration * fps`` frames, so it is held to half a second.
TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({"local": Tolerance(0.5, 0.0)})


def tolerance(provider: str) -> Tolerance:
    """The duration tolerance of ``provider`` (:data:`DEFAULT_TOLERANCE` when not listed)."""
    return TOLERANCES.get(provider, DEFAULT_TOLERANCE)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the shot asked for: ``duration_s`` seconds from ``provider`` (its tolerance)."""

    duration_s: float
    provider: str


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """What :func:`check` measured: codec, frame size in pixels, frames, duration in seconds."""

    codec: str
    width: int
    height: int
    frames: int
    duration_s: float


@dataclass(slots=True)
class _Scan:
    """What one demuxing pass saw of the video stream (timestamps in its time base)."""

    packets: int = 0
    first_ts: int | None = None
    end_ts: int | None = None  # the latest pts + duration
    last_pts: int | None = None  # the latest pts (the last frame shown)
    last_key_ts: int | None = None
    tail: int = 0  # packets from the last keyframe on (decode order)
    first_frame: bool = False
    declared: int = 0


def check(source: Path | bytes, expected: Expected | None = None) -> VideoFacts:
    """Demux ``source`` end to end, decode its first and last frames, check its duration.

    Blocking and CPU-bound: run it in a worker thread (``anyio.to_thread.run_sync``).

    Args:
        source: the video file, or its bytes (a small body checked before it is written).
        expected: the asked duration and the provider (its tolerance); None: no duration check.

    Returns:
        The measured facts.

    Raises:
        UnplayableVideo: not a readable video, truncated, undecodable ends, or a duration
            outside the tolerance. The message says which.
    """
    import av.error

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    what: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        container = av.open(what, mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise _unplayable(f"{size:,} bytes that do not open as a video ({_why(exc)})") from exc
    with container:
        if not container.streams.video:
            raise _unplayable(f"no video stream in {size:,} bytes (truncated, or not a video)")
        stream = container.streams.video[0]
        scan = _demux(container, stream, size)
        if not _last_frame_decodes(container, stream, scan):
            raise _unplayable("the last frames do not decode")
        rate = float(stream.average_rate or stream.base_rate or 0)
        duration = _duration(scan, stream, rate)
        declared = _declared_s(container, stream)
        if declared is not None and duration < declared - max(0.5, 0.1 * declared):
            detail = f"{duration:.1f} s of {declared:.1f} s"
            raise _truncated(size, scan, detail)
        facts = VideoFacts(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=scan.packets,
            duration_s=duration,
        )
    if expected is not None:
        allowed = tolerance(expected.provider).allowed(expected.duration_s)
        if abs(duration - expected.duration_s) > allowed:
            raise UnplayableVideo(
                f"duration {duration:.1f} s, asked {expected.duration_s:g} s "
                f"(tolerance {allowed:.1f} s)"
            )
    return facts


def _demux(container: Any, stream: Any, size: int) -> _Scan:
    """One pass over every packet of ``stream``; decode packets only until a first frame."""
    import av.error

    scan = _Scan(declared=stream.frames or 0)
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the end-of-stream packet: drains the decoder
                if not scan.first_frame and scan.packets:
                    scan.first_frame = _decodes(stream, None)
                continue
            if packet.is_corrupt:
                raise _truncated(size, scan, "the last frame incomplete")
            _note(scan, packet)
            if not scan.first_frame:
                scan.first_frame = _decodes(stream, packet)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise _truncated(size, scan, f"demuxing failed: {_why(exc)}") from exc
    if scan.packets == 0:
        raise _truncated(size, scan, "")
    if scan.declared and scan.packets < scan.declared:
        raise _truncated(size, scan, "the rest is missing")
    if not scan.first_frame:
        raise _unplayable("the first frame does not decode")
    return scan


def _decodes(stream: Any, packet: Any) -> bool:
    """Feed ``packet`` (None: drain) to the decoder: True once it gives a frame."""
    import av.error

    try:
        return bool(stream.codec_context.decode(packet))
    except av.error.FFmpegError as exc:
        raise _unplayable(f"the first frame does not decode ({_why(exc)})") from exc


def _note(scan: _Scan, packet: Any) -> None:
    scan.packets += 1
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None:
        return
    if scan.first_ts is None or ts < scan.first_ts:
        scan.first_ts = ts
    end = ts + (packet.duration or 0)
    if scan.end_ts is None or end > scan.end_ts:
        scan.end_ts = end
    if packet.pts is not None and (scan.last_pts is None or packet.pts > scan.last_pts):
        scan.last_pts = packet.pts
    scan.tail += 1
    if packet.is_keyframe:
        scan.last_key_ts = ts
        scan.tail = 1


def _last_frame_decodes(container: Any, stream: Any, scan: _Scan) -> bool:
    """Seek to the last keyframe and decode to the end: does the last frame come out?

    The last frame needs every reference frame since that keyframe; frames nothing refers to
    (most B-frames) are skipped until the last :data:`_DECODE_ALL` packets, which all decode.
    """
    import av.error

    target = scan.last_key_ts if scan.last_key_ts is not None else scan.first_ts
    ctx = stream.codec_context
    skip_until = scan.tail - _DECODE_ALL if scan.last_key_ts is not None else 0
    try:
        container.seek(target or 0, stream=stream, backward=True, any_frame=False)
        ctx.flush_buffers()
        last: int | None = None
        decoded = 0
        for i, packet in enumerate(container.demux(stream)):
            ctx.skip_frame = "NONREF" if i < skip_until else "DEFAULT"
            for frame in ctx.decode(None if packet.size == 0 else packet):
                decoded += 1
                if frame.pts is not None and (last is None or frame.pts > last):
                    last = frame.pts
    except (av.error.FFmpegError, ValueError, OSError):
        return False
    if scan.last_pts is None or last is None:
        return decoded > 0
    return last >= scan.last_pts


#: The last packets of a video (in decode order) that are all decoded, non-reference frames
#: included: more than the longest run of B-frames between two reference frames.
_DECODE_ALL = 16


def _duration(scan: _Scan, stream: Any, rate: float) -> float:
    """Seconds from the first packet's timestamp to the end of the last one."""
    if scan.first_ts is None or scan.end_ts is None or stream.time_base is None:
        return scan.packets / rate if rate else 0.0
    seconds = float((scan.end_ts - scan.first_ts) * stream.time_base)
    if scan.end_ts == scan.last_pts and rate:  # packets without durations: add the last frame
        seconds += 1.0 / rate
    return seconds


def _declared_s(container: Any, stream: Any) -> float | None:
    """The duration the container's header announces, in seconds (None: it does not say)."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def _truncated(size: int, scan: _Scan, detail: str) -> UnplayableVideo:
    if scan.packets == 0:
        return _unplayable(f"truncated at {size:,} bytes (no frames)")
    frames = (
        f"{scan.packets} of {scan.declared} frames" if scan.declared else f"{scan.packets} frames"
    )
    return _unplayable(f"truncated at {size:,} bytes ({frames}, {detail})")


def _unplayable(reason: str) -> UnplayableVideo:
    return UnplayableVideo(f"not a playable video: {reason}")


def _why(exc: BaseException) -> str:
    """A short reason from a PyAV error (its strerror, without the file name)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)
