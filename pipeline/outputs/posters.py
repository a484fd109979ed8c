"""Poster frames: one JPEG still per finished video, for the storyboard page and contact sheet.

``poster_frame(video, dest)`` decodes one frame with PyAV (the middle of the clip by default, the
first frame of a clip too short to seek in) and writes it as a JPEG of the clip's own size, via a
temporary file and a rename, so a reader never sees half a poster. ``ensure_posters(run_dir,
state)`` keeps ``RUN_DIR/posters/<shot id>.jpg`` up to date for every ``done`` shot, decoding
each video once (the outputs' cache, :mod:`pipeline.outputs.cache`).

Everything here is synchronous and CPU-bound: call it from a worker thread
(``anyio.to_thread.run_sync``), never on the event loop. Times are seconds.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import av
from PIL import Image

from pipeline._util.fsutil import replacing
from pipeline.journal.state import RunState, ShotRecord
from pipeline.models import ShotState
from pipeline.outputs.cache import OutputCache, entry_key, own_cache, write_atomic

log = logging.getLogger("pipeline")

#: Directory of the posters inside a run directory.
POSTERS = "posters"
#: Clips shorter than this (seconds) give their first frame: there is no middle worth seeking to.
SHORT_CLIP_S = 0.5
#: JPEG quality of the posters (Pillow scale 1-95).
QUALITY = 85


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _grab(video: Path, at: float) -> Image.Image:
    """The first frame at or after ``at`` (a fraction of the duration), else the last one."""
    with av.open(str(video)) as container:
        if not container.streams.video:
            raise ValueError(f"{video}: no video stream")
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        target = 0.0 if duration < SHORT_CLIP_S else duration * min(max(at, 0.0), 1.0)
        if target > 0 and stream.time_base is not None:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        last = None
        for frame in container.decode(stream):
            last = frame
            if frame.time is None or frame.time + 1e-6 >= target:
                break
        if last is None:
            raise ValueError(f"{video}: no decodable frame")
        image: Image.Image = last.to_image()  # type: ignore[no-untyped-call]  # av stub gap
        return image


def poster_frame(video: Path, dest: Path, *, at: float = 0.5) -> Path:
    """Write one frame of ``video`` to ``dest`` as a JPEG, atomically.

    Args:
        video: an MP4 (or any container PyAV reads) with a video stream.
        dest: the JPEG to write; its directory must exist. Replaced if present.
        at: where to take the frame, as a fraction of the clip's duration (0.0 first frame,
            0.5 middle). Clips under :data:`SHORT_CLIP_S` seconds always give their first frame.

    Returns:
        ``dest``. The image has the clip's frame size in pixels.

    Raises:
        av.error.FFmpegError (an ``OSError``/``ValueError`` subclass): not a readable video.
        ValueError: the file has no video stream or no decodable frame.
        OSError: ``dest`` cannot be written.
    """
    image = _grab(video, at).convert("RGB")
    with replacing(dest, mode=0o644) as tmp:  # 0644: a web server must read it
        image.save(tmp, "JPEG", quality=QUALITY, optimize=True)
    return dest


def ensure_posters(
    run_dir: Path, state: RunState, *, cache: OutputCache | None = None
) -> dict[str, Path]:
    """Make ``RUN_DIR/posters/<shot id>.jpg`` for every ``done`` shot whose video exists.

    A poster is decoded once per video content (kept in the outputs' cache, keyed by the video's
    sha256, :mod:`pipeline.outputs.cache`); a poster file already made from the same video, and
    unchanged since, is kept as it is. A video that cannot be decoded is logged and left without
    a poster (the page shows its card without one); it is not an error.

    Args:
        run_dir: the run directory.
        state: the replayed checkpoint.
        cache: the rebuild's cache (None: the run directory's own, saved before returning).

    Returns:
        shot id -> poster path, for every done shot that has an up-to-date poster.

    Raises:
        OSError: the posters directory cannot be created.
    """
    posters = run_dir / POSTERS
    posters.mkdir(exist_ok=True)
    cache, owned = own_cache(run_dir, cache)
    out: dict[str, Path] = {}
    for shot_id, rec in state.shots.items():
        if rec.state != ShotState.DONE or not rec.output:
            continue
        try:
            made = _poster(cache, rec, posters / f"{shot_id}.jpg")
        except (OSError, ValueError) as exc:
            log.warning("%s: no poster frame from %s: %s", shot_id, rec.output, exc)
            continue
        if made is not None:
            out[shot_id] = made
    if owned:
        cache.save()
    return out


def _poster(cache: OutputCache, rec: ShotRecord, dest: Path) -> Path | None:
    """``dest`` up to date with the shot's video (None: the video is missing).

    Raises:
        OSError, ValueError (and PyAV's errors, subclasses of both): not a readable video.
    """
    video_path = cache.run_dir / (rec.output or "")
    video = cache.video_id(rec)
    if video is None:
        log.warning("%s: %s is missing; no poster", rec.id, rec.output)
        cache.forget(dest)
        return None
    st = video_path.stat()
    key = poster_key(video)
    signature = f"{key}:{st.st_size}:{st.st_mtime_ns}"  # a touched video: the poster again
    if cache.current(dest, signature):
        cache.stats.kept["poster"] += 1
        return dest
    data = cache.read("poster", key)
    if data is None:
        data = _jpeg(_grab(video_path, 0.5).convert("RGB"))
        cache.store("poster", key, ".jpg", data)
    write_atomic(dest, data)  # 0644: a web server must read it
    cache.record(dest, signature)
    cache.stats.written["poster"] += 1
    return dest


def poster_key(video: str) -> str:
    """The cache key of the poster of a video (``video``: its ``OutputCache.video_id``)."""
    return entry_key("poster", video=video, at=0.5, quality=QUALITY)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()
