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

from pipeline.manifest.capcheck import check_caps, check_media
from pipeline.manifest.media import FileInfo, inspect_file, role_of
from pipeline.manifest.schema import Loc, ManifestHead, Problems, SceneHead, ShotEntries, ShotSpec
from pipeline.models import Asset, MediaRole, Shot
from pipeline.providers import catalog
from pipeline.providers.base import ProviderSpec
from pipeline.providers.catalog import ModelInfo

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
#: Values a shot gets when nothing sets them. ``audio`` and ``resolution`` have none: unset,
#: they stay None and the adapter leaves them out, so the provider's own default applies.
_DEFAULTS: dict[str, Any] = {"duration": 5, "aspect_ratio": "16:9"}
#: File extensions of remote reference URLs that are videos or audio (others: images).
_URL_KINDS = {
    **dict.fromkeys((".mp4", ".mov", ".m4v", ".webm"), MediaRole.REFERENCE_VIDEO),
    **dict.fromkeys((".mp3", ".wav", ".m4a", ".aac", ".ogg", ".flac"), MediaRole.REFERENCE_AUDIO),
}
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
    strict: bool = False
    catalogs: dict[str, catalog.Catalog] = field(default_factory=dict)
    warned: set[tuple[str, str]] = field(default_factory=set)

    def add(self, loc: Loc, message: str) -> None:
        self.problems.add(loc, message)

    def one(self, value: Any) -> Any:
        """One object for equal values (many shots share a model name, a ratio...)."""
        return value if value is None else self.shared.setdefault(value, value)


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
        suffix = Path(ref.split("?")[0].split("#")[0]).suffix.lower()
        return Asset(role=role or _URL_KINDS.get(suffix, MediaRole.REFERENCE_IMAGE), url=ref)
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
) -> tuple[ProviderSpec, str, ModelInfo] | None:
    name = values.get("provider") or "local"
    spec = ctx.registry.get(name)
    if spec is None:
        known = ", ".join(sorted(ctx.registry))
        ctx.add(
            where.get("provider", (*loc, "provider")), f"unknown provider {name!r} (known: {known})"
        )
        return None
    model = values.get("model") or spec.default_model or next(iter(spec.models))
    info = _model_info(ctx, spec, model, where.get("model", (*loc, "model")))
    if info is None:
        return None
    values["provider"], values["model"] = name, model
    return spec, model, info


def _model_info(ctx: _Ctx, spec: ProviderSpec, model: str, at: Loc) -> ModelInfo | None:
    """What ``model`` accepts: the built-in table merged with the cached catalog.

    A model neither knows is accepted unchecked with a warning (an error with ``strict``); a
    model only the provider's list knows is checked as far as the list tells, with a warning
    naming the skipped checks. Each warning is given once per provider and model.
    """
    known = ctx.catalogs.get(spec.name)
    if known is None:
        known = ctx.catalogs[spec.name] = catalog.load(spec)
    info = known.models.get(model)
    if info is not None and info.builtin:
        return info
    if info is None and ctx.strict:
        ctx.add(
            at,
            f"unknown model {model!r} for {spec.name} (--strict; known: {', '.join(known.models)})",
        )
        return None
    if (spec.name, model) not in ctx.warned:
        ctx.warned.add((spec.name, model))
        skipped = ", ".join((info or ModelInfo(catalog.OPEN_CAPS, frozenset())).skipped)
        if info is None:
            cached = f" or the list cached {known.fetched_at}" if known.fetched_at else ""
            said = (
                f"unknown model {model!r} for {spec.name}: not in the built-in table{cached}; "
                f"accepted unchecked (skipped: {skipped}); `pipeline models {spec.name} "
                "--refresh` updates the list, --strict refuses unknown models"
            )
        else:
            said = (
                f"model {model!r} is not in {spec.name}'s built-in table but in its model list "
                f"(cached {known.fetched_at}); skipped checks: {skipped}"
            )
        ctx.problems.warn(at, said)
    return info or ModelInfo(catalog.OPEN_CAPS, frozenset(), builtin=False)


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
    spec, model, info = resolved
    request = {k: values.get(k) for k in _MERGED if k != "seed"} | {
        # Unset audio (the provider's default) hashes as ``false``, as it was stored before it
        # could be left unset: runs checkpointed then keep their fingerprints, so an upgrade
        # never makes their shots look edited (and paid for again).
        "audio": values.get("audio") or False,
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
            audio=values.get("audio"),
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
    check_caps(ctx.add, shots[0], info, where, loc)
    if "media" in info.checked:
        check_media(ctx.add, shots[0], info.caps, loc)
    if spec.check is not None:
        for name, message in spec.check(shots[0], info.caps):
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
    *,
    strict: bool = False,
) -> list[Shot]:
    """Validate every shot entry and expand it into shots, in manifest order.

    Each entry is validated (:class:`~pipeline.manifest.loader.ShotSpec`), expanded and dropped
    before
    the next one. Every problem of the document is reported in one round: an invalid entry is
    not expanded (nothing cascades from it), but every valid one still is and gets all its checks
    (vars, media, capabilities), even when other entries or the document's head have schema
    problems. ``spec`` is then the head as far as it is valid (see
    :func:`pipeline.manifest.loader.load_manifest`).

    Args:
        spec: the document without its shot entries (its valid part), or None when its shots
            cannot be expanded at all (no valid ``scenes``).
        entries: each scene's shot entries (emptied on the way).
        path: the manifest file (absolute); media paths are relative to its directory.
        registry: provider specs by name.
        problems: schema problems found so far (duplicate keys, the head's); warnings (e.g. a
            model the built-in table and the cached catalog do not know) are added to it.
        strict: an unknown model is an error instead of a warning.

    Raises:
        ManifestError: every problem found (schema, unknown provider/model/var, missing or wrong
            media, duplicate ids, capability violations...).
    """
    if spec is None:
        for scene in entries:
            for _ in _valid(scene, problems):
                pass
        raise problems.error()
    ctx = _Ctx(spec, path, registry, problems, strict=strict)
    for name in spec.providers:
        if name not in registry:
            ctx.add(
                ("providers", name),
                f"unknown provider {name!r} (known: {', '.join(sorted(registry))})",
            )
    shots: list[Shot] = []
    for scene in entries:
        if scene.scene >= len(spec.scenes):
            continue  # the scene's own head is invalid: its entries were reported by then
        head = spec.scenes[scene.scene]
        base = _scene_base(spec, head, scene.scene)
        for loc, hi, raw in _valid(scene, problems):
            line = scene.lines[hi] if scene.lines is not None else problems.lines.line(loc)
            shots.extend(_expand_shot(ctx, head, raw, base, loc, line, len(shots)))
    for loc, message in ctx.twins:
        ctx.add(loc, message)
    if problems:
        shots.clear()  # room for looking the lines up
        ctx.seen.clear()
        raise problems.error()
    return shots
