"""Offline checks of one resolved shot against its model's capabilities (``pipeline validate``).

:func:`check_caps` runs the checks a :class:`~pipeline.providers.catalog.ModelInfo` supports
(durations,
ratios, resolutions, prompt length, audio, frames, references); :func:`check_media` checks local
media files against the model's size, pixel and length limits. Problems go to ``add(loc, message)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pipeline.manifest.yaml_reader import Loc
from pipeline.models import Asset, MediaRole, ModelCaps, Shot
from pipeline.providers.catalog import ModelInfo

#: Where a problem goes: ``add(location, message)``.
Add = Callable[[Loc, str], None]


def _choices(values: Sequence[object]) -> str:
    ints = [v for v in values if isinstance(v, int)]
    if ints and len(ints) == len(values) and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}-{ints[-1]}" if len(ints) > 2 else ", ".join(map(str, ints))
    return ", ".join(str(v) for v in values)


def check_frames(add: Add, shot: Shot, caps: ModelCaps, loc: Loc) -> None:
    """First/last-frame images against what the model takes (``loc``: the shot entry)."""
    target = f"{shot.provider}/{shot.model}"
    if shot.image is not None and not caps.first_frame:
        add((*loc, "image"), f"{target} takes no first-frame image")
    if shot.image is None and caps.requires_image:
        add((*loc, "image"), f"{target} is image-to-video: give a first-frame image")
    if shot.end_image is not None and not caps.end_frame:
        add((*loc, "end_image"), f"{target} takes no end-frame image")


def check_caps(add: Add, shot: Shot, info: ModelInfo, where: Mapping[str, Loc], loc: Loc) -> None:
    """Check ``shot`` against the model's caps; only the checks in ``info.checked`` run."""
    target = f"{shot.provider}/{shot.model}"
    caps, checked = info.caps, info.checked

    def at(name: str) -> Loc:
        return where.get(name, (*loc, name))

    if "durations" in checked and caps.durations and shot.duration not in caps.durations:
        add(
            at("duration"),
            f"{shot.duration} s is not allowed for {target} (allowed: {_choices(caps.durations)})",
        )
    if (
        "aspect_ratios" in checked
        and caps.aspect_ratios
        and shot.aspect_ratio not in caps.aspect_ratios
    ):
        add(
            at("aspect_ratio"),
            f"{shot.aspect_ratio!r} is not allowed for {target} "
            f"(allowed: {_choices(caps.aspect_ratios)})",
        )
    if "resolutions" in checked and shot.resolution and shot.resolution not in caps.resolutions:
        allowed = _choices(caps.resolutions) if caps.resolutions else "none: leave it out"
        add(
            at("resolution"),
            f"{shot.resolution!r} is not allowed for {target} (allowed: {allowed})",
        )
    if "prompt" in checked and len(shot.prompt) > caps.max_prompt_chars:
        add(
            (*loc, "prompt"),
            f"{len(shot.prompt)} characters after vars; {target} takes at "
            f"most {caps.max_prompt_chars}",
        )
    if "frames" in checked:
        check_frames(add, shot, caps, loc)
    if "audio" in checked and shot.audio and not caps.audio:
        add(at("audio"), f"{target} cannot generate audio")
    if "references" not in checked:
        return
    limits = {
        MediaRole.REFERENCE_IMAGE: ("reference images", caps.max_reference_images),
        MediaRole.REFERENCE_VIDEO: ("reference videos", caps.max_reference_videos),
        MediaRole.REFERENCE_AUDIO: ("reference audio files", caps.max_reference_audio),
    }
    for role, (label, limit) in limits.items():
        n = sum(1 for r in shot.references if r.role == role)
        if n > limit:
            add((*loc, "references"), f"{n} {label}; {target} takes at most {limit}")


def media_issues(asset: Asset, caps: ModelCaps, target: str) -> list[str]:
    """Problems of one local file against the model's media limits."""
    out = []
    name = asset.path.name if asset.path else (asset.url or "")
    if caps.max_media_bytes is not None and (asset.size or 0) > caps.max_media_bytes:
        out.append(f"{name} is {asset.size} bytes; {target} takes at most {caps.max_media_bytes}")
    if asset.width and asset.height and asset.mime and asset.mime.startswith("image/"):
        short, ratio = min(asset.width, asset.height), asset.width / asset.height
        if caps.min_image_short_side is not None and short < caps.min_image_short_side:
            out.append(
                f"{name} is {asset.width}x{asset.height}; {target} needs images with a "
                f"short side of at least {caps.min_image_short_side} px"
            )
        if caps.image_aspect_range is not None:
            low, high = caps.image_aspect_range
            if not low <= ratio <= high:
                out.append(
                    f"{name} has aspect {ratio:.2f}; {target} accepts {low}-{high} (width/height)"
                )
    seconds = asset.duration_s
    if seconds is not None and asset.role == MediaRole.REFERENCE_VIDEO and caps.reference_video_s:
        low, high = caps.reference_video_s
        if not low <= seconds <= high:
            out.append(
                f"{name} lasts {seconds:.1f} s; {target} takes reference videos of "
                f"{low:g}-{high:g} s"
            )
    limit = caps.max_reference_audio_s
    is_audio = asset.role == MediaRole.REFERENCE_AUDIO
    if seconds is not None and is_audio and limit is not None and seconds > limit:
        out.append(
            f"{name} lasts {seconds:.1f} s; {target} takes reference audio of at most {limit:g} s"
        )
    return out


def check_media(add: Add, shot: Shot, caps: ModelCaps, loc: Loc) -> None:
    """Every local media file of ``shot`` against the model's limits (bytes, pixels, seconds)."""
    target = f"{shot.provider}/{shot.model}"
    for field_name, asset in (("image", shot.image), ("end_image", shot.end_image)):
        if asset is not None:
            for message in media_issues(asset, caps, target):
                add((*loc, field_name), message)
    for i, asset in enumerate(shot.references):
        for message in media_issues(asset, caps, target):
            add((*loc, "references", i), message)
    total = sum(a.duration_s or 0.0 for a in shot.references if a.role == MediaRole.REFERENCE_VIDEO)
    if caps.max_reference_video_total_s is not None and total > caps.max_reference_video_total_s:
        add(
            (*loc, "references"),
            f"reference videos last {total:.1f} s in all; {target} "
            f"takes at most {caps.max_reference_video_total_s:g} s",
        )
