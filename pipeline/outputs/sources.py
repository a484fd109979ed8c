"""Where each shot's picture comes from: the chosen take, its verified video, its middle frame.

Shared by the contact sheet and the animatic; frames are decoded with PyAV.

Synchronous; the decoding is CPU-bound (run it in a worker thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import av
from PIL import Image

from pipeline.journal.state import RunState
from pipeline.models import Shot, ShotState

#: Errors PyAV raises on a file that is not a readable video.
DECODE_ERRORS = (OSError, ValueError, av.error.FFmpegError)


def pick_key(shot: Shot) -> str:
    """The key of a shot in ``picks.json``: ``"<scene>-<shot name>"`` (e.g. ``dawn-s02``)."""
    return f"{shot.scene}-{shot.name}"


def group_takes(shots: Iterable[Shot]) -> dict[str, list[Shot]]:
    """Takes of every shot, keyed by :func:`pick_key`, in manifest order (first take first)."""
    groups: dict[str, list[Shot]] = {}
    for shot in shots:
        groups.setdefault(pick_key(shot), []).append(shot)
    return groups


def chosen_take(
    takes: list[Shot], picks: Mapping[str, int] | None, state: RunState | None = None
) -> Shot:
    """The take the animatic and the timeline use for one shot.

    The picked take when it exists; else, with ``state``, the first take that is done and not
    rejected, then the first not rejected (a rejected take is never cut in while another is
    left); else the first take.

    Args:
        takes: every take of one shot (non-empty), as from :func:`group_takes`.
        picks: ``"<scene>-<shot name>"`` -> take number (1-based); None or absent: no pick.
        state: the replayed checkpoint (shot states, review verdicts); None: take 1 unless
            picked.
    """
    wanted = (picks or {}).get(pick_key(takes[0]))
    picked = next((s for s in takes if (s.take or 1) == wanted), None)
    if picked is not None:
        return picked
    if state is None or len(takes) == 1:
        return takes[0]
    kept = [s for s in takes if not state.review.get(s.id, {}).get("rejected")]
    done = [s for s in kept if (rec := state.shots.get(s.id)) and rec.state == ShotState.DONE]
    return (done or kept or takes)[0]


def shot_video(run_dir: Path, shot: Shot, state: RunState) -> tuple[Path | None, str]:
    """Where a shot's verified video is, or why there is none.

    Returns:
        ``(path, "done")`` when the checkpoint says done and the file exists, else
        ``(None, reason)`` with the shot's state (``"pending"`` for a shot never planned) or
        ``"file not found"``.
    """
    rec = state.shots.get(shot.id)
    if rec is None:
        return None, ShotState.PENDING.value
    if rec.state != ShotState.DONE or not rec.output:
        return None, rec.state.value
    path = run_dir / rec.output
    return (path, "done") if path.is_file() else (None, "file not found")


def middle_frame(path: Path) -> Image.Image:
    """The middle frame of the first video stream of ``path`` (RGB), decoded with PyAV.

    Seeks to the keyframe before the middle and decodes forward, so a long clip costs a few
    frames, not the whole file.

    Raises:
        OSError, ValueError, av.error.FFmpegError: not a readable video (see ``DECODE_ERRORS``).
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time and base else 0.0
        if stream.duration is not None and base is not None:
            length = float(stream.duration * base)
        else:
            length = (container.duration or 0) / av.time_base
        middle = start + length / 2
        if length > 0 and base is not None:
            container.seek(int(middle / base), stream=stream, backward=True)
        found = None
        for frame in container.decode(stream):
            found = frame
            if frame.time is None or frame.time >= middle - 1e-6:
                break
        if found is None:
            raise ValueError(f"{path}: no frame could be decoded")
        image: Image.Image = found.to_image()  # type: ignore[no-untyped-call]
        return image.convert("RGB")
