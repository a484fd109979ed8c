"""What the names of a manifest's shots resolve to, and the state one expansion shares.

:class:`Ctx` is the state shared while :mod:`pipeline.manifest.expand` expands one manifest
(problems, and caches of files, assets, catalogs and shared values). :func:`media` resolves a
shot's media entries (files relative to the manifest, inspected once per path, or URLs) to
:class:`~pipeline.models.Asset` values; :func:`resolve_provider` resolves its provider and model
names to the provider's spec and what the model accepts (the built-in table merged with the
cached catalog).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.manifest.media import FileInfo, inspect_file, role_of
from pipeline.manifest.schema import Loc, ManifestHead, Problems, ShotSpec
from pipeline.models import Asset, MediaRole, Shot
from pipeline.providers import catalog
from pipeline.providers.base import ProviderSpec
from pipeline.providers.catalog import ModelInfo

#: File extensions of remote reference URLs that are videos or audio (others: images).
_URL_KINDS = {
    **dict.fromkeys((".mp4", ".mov", ".m4v", ".webm"), MediaRole.REFERENCE_VIDEO),
    **dict.fromkeys((".mp3", ".wav", ".m4a", ".aac", ".ogg", ".flac"), MediaRole.REFERENCE_AUDIO),
}


@dataclass
class Ctx:
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
        """Record a problem at ``loc``."""
        self.problems.add(loc, message)

    def one(self, value: Any) -> Any:
        """One object for equal values (many shots share a model name, a ratio...)."""
        return value if value is None else self.shared.setdefault(value, value)


def _asset(ctx: Ctx, ref: str, role: MediaRole | None, loc: Loc) -> Asset | None:
    """Resolve one media entry; ``role`` None means 'infer from the file type' (references)."""
    found = ctx.assets.get((ref, role))
    if found is None:
        found = ctx.assets[(ref, role)] = _resolve_asset(ctx, ref, role)
    if isinstance(found, str):
        ctx.add(loc, found)
        return None
    return found


def _resolve_asset(ctx: Ctx, ref: str, role: MediaRole | None) -> Asset | str:
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


def media(
    ctx: Ctx, shot: ShotSpec, loc: Loc
) -> tuple[Asset | None, Asset | None, tuple[Asset, ...]]:
    """A shot's image, end image and references as assets; a wrong one is a problem, left out."""
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


def resolve_provider(
    ctx: Ctx, values: dict[str, Any], where: dict[str, Loc], loc: Loc
) -> tuple[ProviderSpec, str, ModelInfo] | None:
    """The shot's provider spec, model name and what the model accepts; None after a problem.

    Fills in ``values["provider"]`` and ``values["model"]`` (defaults: ``local``, then the
    provider's default model or its first).
    """
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


def _model_info(ctx: Ctx, spec: ProviderSpec, model: str, at: Loc) -> ModelInfo | None:
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
