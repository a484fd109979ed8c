"""Model catalogs: each adapter's built-in table, merged with the provider's own model list.

::

    pipeline models PROVIDER            the cached catalog (with its date), else the built-in table
    pipeline models PROVIDER --refresh  fetch the provider's models endpoint, cache it, show it

Models endpoints (one GET each, every request with a timeout):

- Venice ``GET {base_url}/models?type=video``: ``data[].model_spec.constraints`` give durations
  (``"5s"``), aspect ratios, resolutions, audio and the prompt limit
  (https://docs.venice.ai/api-reference/endpoint/models/list);
- seedance2.ink ``GET /api/open/v1/models``: ``{"success": true, "data": [{"id", ...}]}`` with
  durations, aspect ratios and resolutions where present
  (https://www.seedance2.ink/docs/api-reference);
- the New API gateway and RelayDance ``GET {base_url}/models``: an OpenAI model list, ids only
  (https://relaydance.com/docs/api-reference/generate-video): a model listed there but not in
  the built-in table is known to exist, its capabilities are unknown.

The answer is cached as JSON in ``$XDG_CACHE_HOME/pipeline/models/<provider>.json`` (default
``~/.cache/pipeline/models/``; directory 0700, file 0600, replaced atomically) with its fetch date.
``pipeline validate`` uses it: a listed model is known, and its listed limits are checked.
Every value is parsed defensively: a missing key means "unknown, not checked", an empty list
means "the model takes no value for that field".
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline._util.fsutil import replacing
from pipeline.models import ModelCaps
from pipeline.providers.base import ProviderSpec
from pipeline.providers.catalog_parse import CatalogError as CatalogError
from pipeline.providers.catalog_parse import Found as Found
from pipeline.providers.catalog_parse import parse_openai_list as parse_openai_list
from pipeline.providers.catalog_parse import parse_seedance2 as parse_seedance2
from pipeline.providers.catalog_parse import parse_venice as parse_venice

#: What :func:`pipeline.manifest.expand` checks against a model's capabilities, with readable names.
CHECKS: Mapping[str, str] = {
    "durations": "durations",
    "aspect_ratios": "aspect ratios",
    "resolutions": "resolutions",
    "prompt": "prompt length",
    "audio": "audio support",
    "frames": "first/last-frame support",
    "references": "reference counts",
    "media": "media file limits",
}
ALL_CHECKS = frozenset(CHECKS)
#: Capability fields a models endpoint may report, and the check each one enables.
_FIELD_CHECK = {
    "durations": "durations",
    "aspect_ratios": "aspect_ratios",
    "resolutions": "resolutions",
    "max_prompt_chars": "prompt",
    "audio": "audio",
}
#: Capabilities of a model the built-in table does not know: nothing is refused by them.
OPEN_CAPS = ModelCaps(
    durations=(),
    aspect_ratios=(),
    max_prompt_chars=1_000_000,
    first_frame=True,
    end_frame=True,
    max_reference_images=1_000,
    max_reference_videos=1_000,
    max_reference_audio=1_000,
    audio=True,
)
MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of a catalog.

    Attributes:
        caps: what the model accepts (open where unknown: see ``checked``).
        checked: which :data:`CHECKS` the caps support; the others are skipped by validation.
        builtin: the adapter's table knows the model.
        listed: the provider's models endpoint lists it (None: no list fetched).
    """

    caps: ModelCaps
    checked: frozenset[str] = ALL_CHECKS
    builtin: bool = True
    listed: bool | None = None

    @property
    def skipped(self) -> list[str]:
        """Readable names of the checks validation skips for this model."""
        return [label for name, label in CHECKS.items() if name not in self.checked]


@dataclass(frozen=True, slots=True)
class Catalog:
    """A provider's models: the built-in table merged with its cached or fetched list.

    Attributes:
        provider: registry name.
        models: model id -> :class:`ModelInfo`, built-in models first.
        fetched_at: ISO-8601 UTC time of the fetch (None: built-in table only).
    """

    provider: str
    models: Mapping[str, ModelInfo]
    fetched_at: str | None = None


# ----- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider lists its models (``url`` from the base URL) and how to read it."""

    url: Callable[[str], str]
    parse: Callable[[Any], dict[str, Found]]
    needs_key: bool = True


def _seedance2(base: str) -> str:
    from pipeline.providers.seedance2.codec import api_base

    return api_base(base)


def _newapi(base: str) -> str:
    from pipeline.providers.newapi.adapter import gateway_root

    return gateway_root(base)


ENDPOINTS: Mapping[str, Endpoint] = {
    "venice": Endpoint(lambda b: b.rstrip("/") + "/models?type=video", parse_venice, False),
    "seedance2": Endpoint(lambda b: _seedance2(b) + "/models", parse_seedance2),
    "newapi": Endpoint(lambda b: _newapi(b) + "/v1/models", parse_openai_list),
    "relaydance": Endpoint(lambda b: b.rstrip("/") + "/models", parse_openai_list),
}


# ----- merging ---------------------------------------------------------------------------------


def apply_fields(caps: ModelCaps, fields: Mapping[str, Any], model: str = "") -> ModelCaps:
    """``caps`` with the limits a models endpoint reported put in place (others kept)."""
    changes: dict[str, Any] = {}
    for key in ("durations", "aspect_ratios", "resolutions"):
        if key in fields:
            changes[key] = tuple(fields[key])
    if "audio" in fields:
        changes["audio"] = bool(fields["audio"])
    if "max_prompt_chars" in fields:
        changes["max_prompt_chars"] = int(fields["max_prompt_chars"])
    if fields.get("model_type") == "image-to-video" and "reference-to-video" not in model:
        changes["first_frame"] = True
    return dataclasses.replace(caps, **changes)


def merge(spec: ProviderSpec, found: Mapping[str, Found] | None) -> dict[str, ModelInfo]:
    """The built-in table of ``spec`` merged with a models endpoint's ``found`` entries.

    A built-in model keeps its table caps with the endpoint's limits put in place; a model
    only the endpoint lists gets :data:`OPEN_CAPS` with those limits, and only they are checked.
    """
    out: dict[str, ModelInfo] = {}
    for name, caps in spec.models.items():
        fields = (found or {}).get(name)
        listed = None if found is None else name in found
        out[name] = ModelInfo(apply_fields(caps, fields or {}, name), listed=listed)
    for name, fields in (found or {}).items():
        if name not in out:
            checked = frozenset(_FIELD_CHECK[k] for k in fields or {} if k in _FIELD_CHECK)
            caps = apply_fields(OPEN_CAPS, fields or {}, name)
            out[name] = ModelInfo(caps, checked, builtin=False, listed=True)
    return out


# ----- cache -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pipeline/models`` (``~/.cache/pipeline/models`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "pipeline" / "models"


def cache_path(provider: str) -> Path:
    """The cache file of ``provider``'s model list."""
    return cache_dir() / f"{provider}.json"


def write_cache(provider: str, found: Mapping[str, Found], fetched_at: str) -> Path:
    """Write ``found`` atomically (directory 0700, file 0600); returns the file's path.

    Raises:
        CatalogError: the file cannot be written.
    """
    path = cache_path(provider)
    doc = {"version": 1, "provider": provider, "fetched_at": fetched_at, "models": dict(found)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with replacing(path, mode=0o600) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot write the cache {path}: {exc.strerror or exc}") from None
    return path


def read_cache(provider: str) -> tuple[dict[str, Found], str] | None:
    """The cached ``(found, fetched_at)`` of ``provider``, or None (absent, unreadable, invalid)."""
    try:
        doc = json.loads(cache_path(provider).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict) or not isinstance(doc.get("fetched_at"), str):
        return None
    found = {str(k): (v if isinstance(v, dict) else None) for k, v in models.items()}
    return found, doc["fetched_at"]


def load(spec: ProviderSpec) -> Catalog:
    """``spec``'s catalog: the built-in table merged with the cached list when there is one."""
    cached = read_cache(spec.name)
    if cached is None:
        return Catalog(spec.name, merge(spec, None))
    found, fetched_at = cached
    return Catalog(spec.name, merge(spec, found), fetched_at)


# ----- fetching --------------------------------------------------------------------------------


async def fetch(provider: str, base_url: str, api_key: str | None) -> dict[str, Found]:
    """GET ``provider``'s models endpoint at ``base_url`` and parse it (one request).

    Raises:
        CatalogError: no endpoint, network failure or timeout, a non-200 answer (401/403: the
            key), or an answer that is not the documented JSON. Messages never hold the key.
    """
    import aiohttp

    from pipeline.providers.http import bearer, redact

    # per request: connect within 10 s, the whole answer within 30 s
    timeout = aiohttp.ClientTimeout(total=30.0, sock_connect=10.0, sock_read=20.0)
    endpoint = ENDPOINTS.get(provider)
    if endpoint is None:
        raise CatalogError("no models endpoint; its table is built in")
    url = endpoint.url(base_url)
    where = redact(url.split("?")[0])
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=bearer(api_key)) as resp,
        ):
            body = await resp.content.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise CatalogError(f"could not fetch {where}: {kind}") from None
    if status in (401, 403):
        raise CatalogError(f"{where} answered HTTP {status}: the API key was refused")
    if status != 200:
        raise CatalogError(f"{where} answered HTTP {status}")
    if len(body) > MAX_ANSWER_BYTES:
        raise CatalogError(f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CatalogError(f"{where} did not answer JSON") from None
    try:
        return endpoint.parse(payload)
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def now_iso() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def refresh(spec: ProviderSpec, *, base_url: str | None, api_key: str | None) -> Catalog:
    """Fetch ``spec``'s model list, cache it, merge it with the built-in table.

    Raises:
        CatalogError: see :func:`fetch`; also no base URL, or a missing required key.
    """
    if spec.name not in ENDPOINTS:
        raise CatalogError("no models endpoint; its table is built in")
    base = base_url or spec.defaults.base_url
    if not base:
        raise CatalogError("no default base URL: pass --base-url")
    if api_key is None and ENDPOINTS[spec.name].needs_key:
        env = spec.defaults.api_key_env or "the provider's key variable"
        raise CatalogError(f"no API key: set {env}")
    found = await fetch(spec.name, base, api_key)
    fetched_at = now_iso()
    write_cache(spec.name, found, fetched_at)
    return Catalog(spec.name, merge(spec, found), fetched_at)
