"""Expansion of a parsed manifest into resolved, fingerprinted shots, with every offline check.

Per shot: defaults -> scene defaults -> shot fields (``extra`` dicts are merged); ``{{ var }}``
substituted into the prompt; ``takes: N`` expanded to ``<scene>-<shot>-t1..tN`` with distinct
recorded seeds; media paths resolved relative to the manifest, hashed and sniffed; the result
checked against the provider's model capabilities. Problems are collected, not raised one by one.

Entries are validated and expanded one at a time and dropped at once, so that a 100k-shot manifest
never holds a pydantic model per shot; defaults are merged once per scene, media are resolved once
per distinct path, and values many shots share (provider, model, ratio, extra) are one object.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.manifest import Loc, ManifestHead, Problems, SceneHead, ShotEntries, ShotSpec
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


#: Merged values, the location each came from, and the merged ``extra`` dict.
_Merged = tuple[dict[str, Any], dict[str, Loc], dict[str, Any]]


@dataclass
class _Ctx:
    """State shared while expanding one manifest."""

    spec: ManifestHead
    base: Path
    registry: Mapping[str, ProviderSpec]
    problems: Problems
    files: dict[Path, FileInfo | str] = field(default_factory=dict)
    assets: dict[tuple[str, MediaRole | None], Asset | str] = field(default_factory=dict)
    shared: dict[Any, Any] = field(default_factory=dict)
    seen: dict[str, Shot] = field(default_factory=dict)
    twins: list[tuple[Loc, str]] = field(default_factory=list)

    def add(self, loc: Loc, message: str) -> None:
        self.problems.add(loc, message)

    def one(self, value: Any) -> Any:
        """One object for equal values (many shots share a model name, a ratio...)."""
        return value if value is None else self.shared.setdefault(value, value)


def _choices(values: Sequence[object]) -> str:
    ints = [v for v in values if isinstance(v, int)]
    if ints and len(ints) == len(values) and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}-{ints[-1]}" if len(ints) > 2 else ", ".join(map(str, ints))
    return ", ".join(str(v) for v in values)


def _layer(merged: _Merged, layer: Any, loc: Loc) -> _Merged:
    """``merged`` with one more layer on top (defaults, scene defaults, shot); copies if needed."""
    values, where, extra = merged
    fields = [n for n in _MERGED if n in layer.model_fields_set and getattr(layer, n) is not None]
    if fields:
        values, where = dict(values), dict(where)
        for name in fields:
            values[name] = getattr(layer, name)
            where[name] = (*loc, name)
    if layer.extra:
        extra = {**extra, **layer.extra}
    return values, where, extra


def _scene_base(spec: ManifestHead, scene: SceneHead, si: int) -> _Merged:
    """The manifest defaults with the scene defaults on top: what each of its shots starts from."""
    merged = _layer((dict(_DEFAULTS), {}, {}), spec.defaults, ("defaults",))
    return _layer(merged, scene.defaults, ("scenes", si, "defaults"))


def _prompt(ctx: _Ctx, text: str, loc: Loc) -> str:
    if "{{" not in text and "}}" not in text:
        return text

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
    found = ctx.assets.get((ref, role))
    if found is None:
        found = ctx.assets[(ref, role)] = _resolve_asset(ctx, ref, role)
    if isinstance(found, str):
        ctx.add(loc, found)
        return None
    return found


def _resolve_asset(ctx: _Ctx, ref: str, role: MediaRole | None) -> Asset | str:
    """The asset a media entry stands for, or what is wrong with it (the same for every shot)."""
    if ref.startswith(("https://", "http://")):
        return Asset(role=role or MediaRole.REFERENCE_IMAGE, url=ref)
    if ref.startswith("data:"):
        return "inline data: URLs are not accepted; give a file path or an https URL"
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
        return info
    kind = role_of(info.mime) if info.mime else None
    if kind is None:
        return f"{ref} is not an image, video or audio file (type sniffed from its content)"
    if info.problem is not None:
        return f"{ref} looks like {info.mime} but {info.problem}"
    if role is not None and kind != MediaRole.REFERENCE_IMAGE:
        return f"{ref} is {info.mime}, but a frame must be an image (png, jpeg, webp...)"
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


def _expand_shot(
    ctx: _Ctx,
    scene: SceneHead,
    raw: ShotSpec,
    base: _Merged,
    loc: Loc,
    line: int | None,
    order: int,
) -> list[Shot]:
    values, where, extra = _layer(base, raw, loc)
    values = dict(values)  # _resolve_provider fills in provider and model
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
            model=ctx.one(model),
            duration=values["duration"],
            aspect_ratio=ctx.one(values["aspect_ratio"]),
            fingerprint=fingerprint(request | {"seed": seed}),
            take=take,
            resolution=ctx.one(values.get("resolution")),
            audio=bool(values.get("audio")),
            seed=seed,
            image=image,
            end_image=end,
            references=refs,
            consent=values.get("consent"),
            extra=extra,
            line=line,
            order=order + (take or 1) - 1,
        )
        shots.append(shot)
        _note_id(ctx, shot, loc)
    _check_caps(ctx, shots[0], caps, where, loc)
    _check_media(ctx, shots[0], caps, loc)
    if spec.check is not None:
        for name, message in spec.check(shots[0], caps):
            ctx.add(where.get(name, (*loc, name)), message)
    return shots


def _note_id(ctx: _Ctx, shot: Shot, loc: Loc) -> None:
    """Ids must be unique ignoring case (reported after every other problem, as found)."""
    key = shot.id.lower()
    other = ctx.seen.get(key)
    if other is not None:
        ctx.twins.append(
            (
                (*loc, "id"),
                f"shot id {shot.id!r} is used twice (also line {other.line}); ids are "
                "scene-shot[-tN] and must differ ignoring case",
            )
        )
    ctx.seen[shot.id if key == shot.id else key] = shot


def _valid(entries: ShotEntries, problems: Problems) -> Iterator[tuple[Loc, int, ShotSpec]]:
    """Each valid entry of a scene (location, index, model), validated as it is reached.

    The raw entries are dropped on the way; the problems of invalid ones go to ``problems``.
    """
    items = entries.items
    for hi, item in enumerate(items):
        items[hi] = None
        loc: Loc = ("scenes", entries.scene, "shots", hi)
        try:
            raw = ShotSpec.model_validate(item)
        except ValidationError as exc:
            problems.add_validation(exc, loc)
            continue
        yield loc, hi, raw


def expand(
    spec: ManifestHead | None,
    entries: Sequence[ShotEntries],
    path: Path,
    registry: Mapping[str, ProviderSpec],
    problems: Problems,
) -> list[Shot]:
    """Validate every shot entry and expand it into shots, in manifest order.

    Each entry is validated (:class:`~pipeline.manifest.ShotSpec`), expanded and dropped before
    the next one. Once the document has a schema problem (``problems`` not empty, or ``spec``
    None), the remaining entries are only validated: schema problems are reported alone, all of
    them, as for the whole document at once.

    Args:
        spec: the document without its shot entries, or None when it is invalid.
        entries: each scene's shot entries (emptied on the way).
        path: the manifest file (absolute); media paths are relative to its directory.
        registry: provider specs by name.
        problems: schema problems found so far (duplicate keys, the head's).

    Raises:
        ManifestError: every problem found (schema, unknown provider/model/var, missing or wrong
            media, duplicate ids, capability violations...).
    """
    if spec is None:
        for scene in entries:
            for _ in _valid(scene, problems):
                pass
        raise problems.error()
    ctx = _Ctx(spec, path, registry, Problems(problems.file, problems.lines))
    for name in spec.providers:
        if name not in registry:
            ctx.add(
                ("providers", name),
                f"unknown provider {name!r} (known: {', '.join(sorted(registry))})",
            )
    shots: list[Shot] = []
    for scene in entries:
        head = spec.scenes[scene.scene]
        base = _scene_base(spec, head, scene.scene)
        for loc, hi, raw in _valid(scene, problems):
            if problems:
                continue  # schema problems are reported alone
            line = scene.lines[hi] if scene.lines is not None else problems.lines.line(loc)
            shots.extend(_expand_shot(ctx, head, raw, base, loc, line, len(shots)))
    if problems:
        shots.clear()  # room for looking the lines up
        raise problems.error()
    for loc, message in ctx.twins:
        ctx.add(loc, message)
    if ctx.problems:
        shots.clear()
        ctx.seen.clear()
        raise ctx.problems.error()
    return shots
