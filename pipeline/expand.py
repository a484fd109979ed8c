"""Expansion of a parsed manifest into resolved, fingerprinted shots, with every offline check.

Per shot: defaults -> scene defaults -> shot fields (``extra`` dicts are merged); ``{{ var }}``
substituted into the prompt; ``takes: N`` expanded to ``<scene>-<shot>-t1..tN`` with distinct
recorded seeds; media paths resolved relative to the manifest, hashed and sniffed; the result
checked against the provider's model capabilities. Problems are collected, not raised one by one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ManifestError, ManifestIssue
from pipeline.manifest import LineMap, Loc, ManifestSpec, SceneSpec, ShotSpec, field_path
from pipeline.media import FileInfo, inspect_file, role_of
from pipeline.models import Asset, MediaRole, ModelCaps, Shot
from pipeline.providers.base import ProviderSpec

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_DEFAULTS: dict[str, Any] = {"duration": 5, "aspect_ratio": "16:9", "audio": False}
_MERGED = (
    "provider",
    "model",
    "duration",
    "aspect_ratio",
    "resolution",
    "audio",
    "seed",
    "consent",
)


@dataclass
class _Ctx:
    """State shared while expanding one manifest."""

    spec: ManifestSpec
    lines: LineMap
    base: Path
    file: str
    registry: Mapping[str, ProviderSpec]
    issues: list[ManifestIssue] = field(default_factory=list)
    files: dict[Path, FileInfo | str] = field(default_factory=dict)

    def add(self, loc: Loc, message: str) -> None:
        self.issues.append(ManifestIssue(self.file, self.lines.line(loc), field_path(loc), message))


def _choices(values: Sequence[object]) -> str:
    ints = [v for v in values if isinstance(v, int)]
    if ints and len(ints) == len(values) and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}-{ints[-1]}" if len(ints) > 2 else ", ".join(map(str, ints))
    return ", ".join(str(v) for v in values)


def _merge(
    scene: SceneSpec, shot: ShotSpec, si: int, hi: int, spec: ManifestSpec
) -> tuple[dict[str, Any], dict[str, Loc], dict[str, Any]]:
    """Merged values, the location each came from, and the merged ``extra`` dict."""
    values = dict(_DEFAULTS)
    where: dict[str, Loc] = {}
    extra: dict[str, Any] = {}
    layers: list[tuple[Any, Loc]] = [
        (spec.defaults, ("defaults",)),
        (scene.defaults, ("scenes", si, "defaults")),
        (shot, ("scenes", si, "shots", hi)),
    ]
    for layer, loc in layers:
        for name in _MERGED:
            if name in layer.model_fields_set and getattr(layer, name) is not None:
                values[name] = getattr(layer, name)
                where[name] = (*loc, name)
        if layer.extra:
            extra.update(layer.extra)
    return values, where, extra


def _prompt(ctx: _Ctx, text: str, loc: Loc) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ctx.spec.vars:
            return ctx.spec.vars[name]
        known = ", ".join(sorted(ctx.spec.vars)) or "none are defined"
        ctx.add(loc, f"unknown var {{{{ {name} }}}} (defined in vars: {known})")
        return match.group(0)

    out = _VAR.sub(sub, text)
    if "{{" in _VAR.sub("", text) or "}}" in _VAR.sub("", text):
        ctx.add(loc, "unbalanced '{{' or '}}': write vars as {{ name }}")
    return out


def _asset(ctx: _Ctx, ref: str, role: MediaRole | None, loc: Loc) -> Asset | None:
    """Resolve one media entry; ``role`` None means 'infer from the file type' (references)."""
    if ref.startswith(("https://", "http://")):
        return Asset(role=role or MediaRole.REFERENCE_IMAGE, url=ref)
    if ref.startswith("data:"):
        ctx.add(loc, "inline data: URLs are not accepted; give a file path or an https URL")
        return None
    path = (ctx.base.parent / ref).resolve()
    info = ctx.files.get(path)
    if info is None:
        if not path.is_file():
            info = f"no such file: {ref} (paths are relative to the manifest: {ctx.base.parent})"
        else:
            try:
                info = inspect_file(path)
            except OSError as exc:
                info = f"cannot read {ref}: {exc.strerror}"
        ctx.files[path] = info
    if isinstance(info, str):
        ctx.add(loc, info)
        return None
    kind = role_of(info.mime) if info.mime else None
    if kind is None:
        ctx.add(loc, f"{ref} is not an image, video or audio file (type sniffed from its content)")
        return None
    if info.problem is not None:
        ctx.add(loc, f"{ref} looks like {info.mime} but {info.problem}")
        return None
    if role is not None and kind != MediaRole.REFERENCE_IMAGE:
        ctx.add(loc, f"{ref} is {info.mime}, but a frame must be an image (png, jpeg, webp...)")
        return None
    return Asset(
        role=role or kind,
        path=path,
        sha256=info.sha256,
        size=info.size,
        mime=info.mime,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
    )


def _media(
    ctx: _Ctx, shot: ShotSpec, loc: Loc
) -> tuple[Asset | None, Asset | None, tuple[Asset, ...]]:
    image = _asset(ctx, shot.image, MediaRole.IMAGE, (*loc, "image")) if shot.image else None
    end = (
        _asset(ctx, shot.end_image, MediaRole.END_IMAGE, (*loc, "end_image"))
        if shot.end_image
        else None
    )
    refs = []
    for i, ref in enumerate(shot.references):
        asset = _asset(ctx, ref, None, (*loc, "references", i))
        if asset is not None:
            refs.append(asset)
    return image, end, tuple(refs)


def _check_caps(ctx: _Ctx, shot: Shot, caps: ModelCaps, where: Mapping[str, Loc], loc: Loc) -> None:
    target = f"{shot.provider}/{shot.model}"

    def at(name: str) -> Loc:
        return where.get(name, (*loc, name))

    if shot.duration not in caps.durations:
        ctx.add(
            at("duration"),
            f"{shot.duration} s is not allowed for {target} (allowed: {_choices(caps.durations)})",
        )
    if caps.aspect_ratios and shot.aspect_ratio not in caps.aspect_ratios:
        ctx.add(
            at("aspect_ratio"),
            f"{shot.aspect_ratio!r} is not allowed for {target} "
            f"(allowed: {_choices(caps.aspect_ratios)})",
        )
    if shot.resolution is not None and shot.resolution not in caps.resolutions:
        allowed = _choices(caps.resolutions) if caps.resolutions else "none: leave it out"
        ctx.add(
            at("resolution"),
            f"{shot.resolution!r} is not allowed for {target} (allowed: {allowed})",
        )
    if len(shot.prompt) > caps.max_prompt_chars:
        ctx.add(
            (*loc, "prompt"),
            f"{len(shot.prompt)} characters after vars; {target} takes at "
            f"most {caps.max_prompt_chars}",
        )
    if shot.image is not None and not caps.first_frame:
        ctx.add((*loc, "image"), f"{target} takes no first-frame image")
    if shot.image is None and caps.requires_image:
        ctx.add((*loc, "image"), f"{target} is image-to-video: give a first-frame image")
    if shot.end_image is not None and not caps.end_frame:
        ctx.add((*loc, "end_image"), f"{target} takes no end-frame image")
    if shot.audio and not caps.audio:
        ctx.add(at("audio"), f"{target} cannot generate audio")
    limits = {
        MediaRole.REFERENCE_IMAGE: ("reference images", caps.max_reference_images),
        MediaRole.REFERENCE_VIDEO: ("reference videos", caps.max_reference_videos),
        MediaRole.REFERENCE_AUDIO: ("reference audio files", caps.max_reference_audio),
    }
    for role, (label, limit) in limits.items():
        n = sum(1 for r in shot.references if r.role == role)
        if n > limit:
            ctx.add((*loc, "references"), f"{n} {label}; {target} takes at most {limit}")


def _media_issues(asset: Asset, caps: ModelCaps, target: str) -> list[str]:
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


def _check_media(ctx: _Ctx, shot: Shot, caps: ModelCaps, loc: Loc) -> None:
    target = f"{shot.provider}/{shot.model}"
    for field_name, asset in (("image", shot.image), ("end_image", shot.end_image)):
        if asset is not None:
            for message in _media_issues(asset, caps, target):
                ctx.add((*loc, field_name), message)
    for i, asset in enumerate(shot.references):
        for message in _media_issues(asset, caps, target):
            ctx.add((*loc, "references", i), message)
    total = sum(a.duration_s or 0.0 for a in shot.references if a.role == MediaRole.REFERENCE_VIDEO)
    if caps.max_reference_video_total_s is not None and total > caps.max_reference_video_total_s:
        ctx.add(
            (*loc, "references"),
            f"reference videos last {total:.1f} s in all; {target} "
            f"takes at most {caps.max_reference_video_total_s:g} s",
        )


def fingerprint(request: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of a resolved request."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _asset_key(a: Asset | None) -> list[str] | None:
    return None if a is None else [a.role.value, a.sha256 or a.url or ""]


def _seed(name: str, shot_id: str, take: int) -> int:
    digest = hashlib.sha256(f"{name}\0{shot_id}\0{take}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _resolve_provider(
    ctx: _Ctx, values: dict[str, Any], where: dict[str, Loc], loc: Loc
) -> tuple[ProviderSpec, str, ModelCaps] | None:
    name = values.get("provider") or "local"
    spec = ctx.registry.get(name)
    if spec is None:
        known = ", ".join(sorted(ctx.registry))
        ctx.add(
            where.get("provider", (*loc, "provider")), f"unknown provider {name!r} (known: {known})"
        )
        return None
    model = values.get("model") or spec.default_model or next(iter(spec.models))
    caps = spec.models.get(model)
    if caps is None:
        ctx.add(
            where.get("model", (*loc, "model")),
            f"unknown model {model!r} for {name} (known: {', '.join(spec.models)})",
        )
        return None
    values["provider"], values["model"] = name, model
    return spec, model, caps


def _expand_shot(ctx: _Ctx, si: int, hi: int, order: int) -> list[Shot]:
    scene = ctx.spec.scenes[si]
    raw = scene.shots[hi]
    loc: Loc = ("scenes", si, "shots", hi)
    values, where, extra = _merge(scene, raw, si, hi, ctx.spec)
    prompt = _prompt(ctx, raw.prompt, (*loc, "prompt"))
    image, end, refs = _media(ctx, raw, loc)
    resolved = _resolve_provider(ctx, values, where, loc)
    if resolved is None:
        return []
    spec, model, caps = resolved
    request = {k: values.get(k) for k in _MERGED if k != "seed"} | {
        "prompt": prompt,
        "image": _asset_key(image),
        "end_image": _asset_key(end),
        "references": [_asset_key(r) for r in refs],
        "extra": extra,
    }
    shots = []
    for take in range(1, raw.takes + 1) if raw.takes > 1 else [None]:
        sid = f"{scene.id}-{raw.id}" + (f"-t{take}" if take else "")
        seed = values.get("seed")
        seed = (
            (seed + (take or 1) - 1) if seed is not None else _seed(ctx.spec.name, sid, take or 1)
        )
        shot = Shot(
            id=sid,
            scene=scene.id,
            name=raw.id,
            prompt=prompt,
            provider=spec.name,
            model=model,
            duration=values["duration"],
            aspect_ratio=values["aspect_ratio"],
            fingerprint=fingerprint(request | {"seed": seed}),
            take=take,
            resolution=values.get("resolution"),
            audio=bool(values.get("audio")),
            seed=seed,
            image=image,
            end_image=end,
            references=refs,
            consent=values.get("consent"),
            extra=extra,
            line=ctx.lines.line(loc),
            order=order + (take or 1) - 1,
        )
        shots.append(shot)
    _check_caps(ctx, shots[0], caps, where, loc)
    _check_media(ctx, shots[0], caps, loc)
    if spec.check is not None:
        for name, message in spec.check(shots[0], caps):
            ctx.add(where.get(name, (*loc, name)), message)
    return shots


def _check_unique(ctx: _Ctx, shots: list[tuple[Shot, Loc]]) -> None:
    seen: dict[str, Shot] = {}
    for shot, loc in shots:
        other = seen.get(shot.id.lower())
        if other is not None:
            ctx.add(
                (*loc, "id"),
                f"shot id {shot.id!r} is used twice (also line {other.line}); ids are "
                "scene-shot[-tN] and must differ ignoring case",
            )
        seen[shot.id.lower()] = shot


def expand(
    spec: ManifestSpec, lines: LineMap, path: Path, file: str, registry: Mapping[str, ProviderSpec]
) -> list[Shot]:
    """Expand ``spec`` into shots in manifest order.

    Raises:
        ManifestError: every problem found (unknown provider/model/var, missing or wrong media,
            duplicate ids, capability violations...).
    """
    ctx = _Ctx(spec, lines, path, file, registry)
    for name in spec.providers:
        if name not in registry:
            ctx.add(
                ("providers", name),
                f"unknown provider {name!r} (known: {', '.join(sorted(registry))})",
            )
    shots: list[tuple[Shot, Loc]] = []
    for si, scene in enumerate(spec.scenes):
        for hi in range(len(scene.shots)):
            loc: Loc = ("scenes", si, "shots", hi)
            shots.extend((shot, loc) for shot in _expand_shot(ctx, si, hi, len(shots)))
    _check_unique(ctx, shots)
    if ctx.issues:
        raise ManifestError(sorted(ctx.issues, key=lambda i: (i.line or 0, i.field)))
    return [shot for shot, _ in shots]
