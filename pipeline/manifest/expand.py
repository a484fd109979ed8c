"""Expansion of a parsed manifest into resolved, fingerprinted shots, with every offline check.

Per shot: defaults -> scene defaults -> shot fields (``extra`` dicts are merged); ``{{ var }}``
substituted into the prompt; ``takes: N`` expanded to ``<scene>-<shot>-t1..tN`` with distinct
recorded seeds; media paths resolved relative to the manifest, hashed and sniffed; the result
checked against the provider's model capabilities. Problems are collected, not raised one by one.

Entries are validated and expanded one at a time and dropped at once, so that a 100k-shot manifest
never holds a pydantic model per shot; defaults are merged once per scene, media are resolved once
per distinct path, and values many shots share (provider, model, ratio, extra) are one object.

Media entries and provider/model names are resolved by :mod:`pipeline.manifest.resolve`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.manifest.capcheck import check_caps, check_media
from pipeline.manifest.resolve import Ctx, media, resolve_provider
from pipeline.manifest.schema import Loc, ManifestHead, Problems, SceneHead, ShotEntries, ShotSpec
from pipeline.models import Asset, Shot
from pipeline.providers.base import ProviderSpec

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
#: Values a shot gets when nothing sets them. ``audio`` and ``resolution`` have none: unset,
#: they stay None and the adapter leaves them out, so the provider's own default applies.
_DEFAULTS: dict[str, Any] = {"duration": 5, "aspect_ratio": "16:9"}
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


def _prompt(ctx: Ctx, text: str, loc: Loc) -> str:
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


def fingerprint(request: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of a resolved request."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _asset_key(a: Asset | None) -> list[str] | None:
    return None if a is None else [a.role.value, a.sha256 or a.url or ""]


def _seed(name: str, shot_id: str, take: int) -> int:
    digest = hashlib.sha256(f"{name}\0{shot_id}\0{take}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def take_of(shot: Shot, take: int, run_name: str) -> Shot:
    """Take ``take`` of ``shot``'s request: what ``takes: take`` or more would have expanded to.

    Used for a re-roll (``pipeline review``): the new take has the id ``<scene>-<shot>-t<take>``,
    the seed and fingerprint the manifest's own take of that number would have (so raising
    ``takes`` later to include it does not pay for it again), and sorts after ``shot``.

    Args:
        shot: any take of the shot (or the shot itself when it has one take).
        take: the new take's number (>= 1).
        run_name: the manifest's ``name`` (derived seeds depend on it).
    """
    sid = f"{shot.scene}-{shot.name}-t{take}"
    first = shot.take or 1
    derived = shot.seed is None or shot.seed == _seed(run_name, shot.id, first)
    # A seed the manifest set counts up with the takes; a derived one is derived again.
    seed = _seed(run_name, sid, take) if derived else (shot.seed or 0) - first + take
    request = {
        "provider": shot.provider,
        "model": shot.model,
        "duration": shot.duration,
        "aspect_ratio": shot.aspect_ratio,
        "resolution": shot.resolution,
        "audio": shot.audio or False,  # as _expand_shot hashes it
        "consent": shot.consent,
        "prompt": shot.prompt,
        "image": _asset_key(shot.image),
        "end_image": _asset_key(shot.end_image),
        "references": [_asset_key(r) for r in shot.references],
        "extra": dict(shot.extra),
        "seed": seed,
    }
    return replace(
        shot, id=sid, take=take, seed=seed, fingerprint=fingerprint(request), order=shot.order + 1
    )


def _expand_shot(
    ctx: Ctx,
    scene: SceneHead,
    raw: ShotSpec,
    base: _Merged,
    loc: Loc,
    line: int | None,
    order: int,
) -> list[Shot]:
    values, where, extra = _layer(base, raw, loc)
    values = dict(values)  # resolve_provider fills in provider and model
    prompt = _prompt(ctx, raw.prompt, (*loc, "prompt"))
    image, end, refs = media(ctx, raw, loc)
    resolved = resolve_provider(ctx, values, where, loc)
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


def _note_id(ctx: Ctx, shot: Shot, loc: Loc) -> None:
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
    ctx = Ctx(spec, path, registry, problems, strict=strict)
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
