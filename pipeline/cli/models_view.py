"""``pipeline models PROVIDER [--refresh] [--json]``: show a provider's model catalog.

The catalog logic (fetch, parse, cache, merge) is :mod:`pipeline.providers.catalog`; this module
renders it
as a table or JSON and maps every failure to one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from pipeline._util import redaction
from pipeline.cli import userconfig
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderSpec
from pipeline.providers.catalog import (
    ENDPOINTS,
    Catalog,
    CatalogError,
    ModelInfo,
    cache_path,
    load,
    refresh,
)
from pipeline.settings import api_url

# ----- the `pipeline models` command -----------------------------------------------------------


def _span(values: tuple[int, ...]) -> str:
    if values and list(values) == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values)) or "-"


def describe(name: str, info: ModelInfo) -> dict[str, Any]:
    """One model as JSON: its id, where it is known from, its limits (None: not known)."""
    caps, checked = info.caps, info.checked

    def known(check: str, value: Any) -> Any:
        return value if check in checked else None

    return {
        "id": name,
        "builtin": info.builtin,
        "listed": info.listed,
        "durations": known("durations", list(caps.durations)),
        "aspect_ratios": known("aspect_ratios", list(caps.aspect_ratios)),
        "resolutions": known("resolutions", list(caps.resolutions)),
        "max_prompt_chars": known("prompt", caps.max_prompt_chars),
        "audio": known("audio", caps.audio),
        "first_frame": known("frames", caps.first_frame),
        "end_frame": known("frames", caps.end_frame),
        "requires_image": known("frames", caps.requires_image),
        "max_reference_images": known("references", caps.max_reference_images),
        "max_reference_videos": known("references", caps.max_reference_videos),
        "max_reference_audio": known("references", caps.max_reference_audio),
        "unchecked": info.skipped,
    }


def render(catalog: Catalog, origin: str) -> str:
    """A table of ``catalog`` under a header line saying where it comes from."""
    rows = [("MODEL", "SECONDS", "RATIOS", "RESOLUTIONS", "AUDIO", "FRAMES", "REFS", "SOURCE")]
    for name, info in catalog.models.items():
        d = describe(name, info)

        def show(value: Any, text: Callable[[Any], str]) -> str:
            return "?" if value is None else text(value)

        frames = (
            "?"
            if d["first_frame"] is None
            else (("first" if d["first_frame"] else "-") + ("+last" if d["end_frame"] else ""))
        )
        refs = (
            "?"
            if d["max_reference_images"] is None
            else (
                f"{d['max_reference_images']}i/{d['max_reference_videos']}v/{d['max_reference_audio']}a"
            )
        )
        source = "built-in" if info.builtin else "provider list"
        if info.builtin and info.listed is not None:
            source += ", listed" if info.listed else ", NOT listed by the provider"
        rows.append(
            (
                name,
                show(d["durations"], lambda v: _span(tuple(v))),
                show(d["aspect_ratios"], lambda v: ",".join(v) or "-"),
                show(d["resolutions"], lambda v: ",".join(v) or "-"),
                show(d["audio"], lambda v: "yes" if v else "no"),
                frames,
                refs,
                source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return f"{catalog.provider}: {origin}\n" + "\n".join(lines)


async def _refresh(
    spec: ProviderSpec, base_url: str | None, key: str | None, simulate: bool
) -> Catalog:
    """Refresh ``spec``'s catalog from its API, or from its simulator when ``simulate``."""
    if spec.name not in ENDPOINTS:
        raise CatalogError("no models endpoint; its table is built in")
    if not simulate:
        return await refresh(spec, base_url=base_url, api_key=key)
    from pipeline import sim  # aiohttp's server side: only for `--refresh --simulate`

    async with sim.running([spec.name]) as sims:
        return await refresh(spec, base_url=sims[spec.name].base_url, api_key=sim.SIM_KEY)


def command(args: Any, environ: Mapping[str, str] | None = None) -> int:
    """``pipeline models PROVIDER [--refresh] [--json] [--base-url URL] [--simulate]``.

    Args:
        args: the parsed command line (``provider``, ``refresh``, ``json``, ``base_url``,
            ``simulate``).
        environ: where the provider's API key variable is read (default ``os.environ``); the
            base URL and key variable are the user's (:mod:`pipeline.cli.endpoints`) unless
            ``--base-url`` is given.

    Returns:
        0, or 2 with a one-line ``error:`` message on stderr (unknown provider, fetch failure).
    """
    spec = PROVIDERS.get(args.provider)
    if spec is None:
        print(
            f"error: unknown provider {args.provider!r} (known: {', '.join(PROVIDERS)})",
            file=sys.stderr,
        )
        return 2
    env = os.environ if environ is None else environ
    mine = userconfig.load_user_config(env).providers.get(spec.name, userconfig.UserProvider())
    key = env.get(mine.api_key_env or spec.defaults.api_key_env or "") or None
    redaction.register(key)
    base_url = getattr(args, "base_url", None)
    try:
        base_url = api_url(base_url) or mine.base_url
    except ValueError as exc:
        print(f"error: --base-url {base_url}: {exc}", file=sys.stderr)
        return 2
    try:
        if getattr(args, "refresh", False):
            simulate = getattr(args, "simulate", False)
            catalog = anyio.run(_refresh, spec, base_url, key, simulate)
            origin = f"fetched {catalog.fetched_at}, cached in {cache_path(spec.name)}"
        else:
            catalog = load(spec)
            origin = (
                f"cached list of {catalog.fetched_at} merged with the built-in table"
                if catalog.fetched_at
                else "built-in table (`pipeline models "
                f"{spec.name} --refresh` fetches the provider's list)"
            )
    except CatalogError as exc:
        print(f"error: {spec.name}: {redaction.redact(str(exc))}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        doc = {
            "provider": spec.name,
            "fetched_at": catalog.fetched_at,
            "models": [describe(n, i) for n, i in catalog.models.items()],
        }
        print(json.dumps(doc))
    else:
        print(render(catalog, origin))
    return 0
