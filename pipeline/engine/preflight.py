"""Preflight: before anything is paid for, check that every service a run needs answers.

:func:`preflight` makes a few free calls, concurrently and each under a deadline:

- for each provider the manifest's shots use (free providers such as ``local`` are skipped): the
  API key is set, the base URL answers and the key is accepted, with one free authenticated call
  (at most two). Venice: ``POST /video/quote`` for the first Venice shot (``GET /models`` takes no
  key there); seedance2: ``GET /models`` (no key) then ``GET /video/generations/<unknown id>``
  (401 with a bad key, 404 with a good one); newapi: ``GET /v1/models`` under the gateway root;
  relaydance: ``GET /models``. Other registered adapters are asked through their optional
  :class:`~pipeline.providers.base.SupportsProbe`;
- object storage, when the manifest has ``storage`` and some shot's local files must be uploaded:
  credentials are found in the environment (never by waiting on a cloud metadata service, see
  :mod:`pipeline.transfer.storage`), and a test object ``<prefix>/.pipeline-preflight-<random>`` is
  written, read back and deleted.

Every problem is a :class:`PreflightProblem`; messages name hosts, variables and settings, never
a key (everything from outside passes :func:`pipeline.providers.http.redact`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio

from pipeline._util import redaction
from pipeline.errors import ManifestError, NotSent, ProviderError, RateLimited, Rejected
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderContext, ProviderSpec, SupportsProbe
from pipeline.providers.http import bearer, redact
from pipeline.providers.newapi.adapter import gateway_root
from pipeline.providers.seedance2.codec import api_base
from pipeline.providers.venice.codec import build_quote
from pipeline.settings import ProviderSettings, StorageSettings
from pipeline.transfer.storage import ObjectStorage, StorageError, StoreAccess

Kind = Literal["unreachable", "auth", "config"]

#: StorageError kinds (pipeline.transfer.storage.KINDS) as preflight kinds.
_STORAGE_KINDS: Mapping[str, Kind] = {
    "credentials": "auth",
    "denied": "auth",
    "unreachable": "unreachable",
}


@dataclass(frozen=True, slots=True)
class PreflightProblem:
    """One reason a run would fail or stall if it started now.

    Attributes:
        subject: a provider name (``"venice"``) or ``"storage"``.
        kind: ``unreachable`` (no connection, timeout, 5xx), ``auth`` (key or credentials
            missing or refused) or ``config`` (a setting points at the wrong place).
        message: what happened, one line, naming the host or store (never a secret).
        hint: what to set or fix.
    """

    subject: str
    kind: Kind
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True, slots=True)
class _Call:
    """One free request: ``path`` under the provider's API base; a JSON body built from a shot."""

    method: str
    path: str
    body: Callable[[Shot], Any] | None = None
    not_found_ok: bool = False  # 404 is the answer to a good key (an unknown task id)


def _strip(base: str) -> str:
    return base.rstrip("/")


#: Per built-in provider: its API base from the configured base URL, and the calls to make.
_CALLS: Mapping[str, tuple[Callable[[str], str], tuple[_Call, ...]]] = {
    "venice": (_strip, (_Call("POST", "/video/quote", body=build_quote),)),
    "seedance2": (
        api_base,
        (
            _Call("GET", "/models"),
            _Call("GET", "/video/generations/pipeline-preflight", not_found_ok=True),
        ),
    ),
    "newapi": (gateway_root, (_Call("GET", "/v1/models"),)),
    "relaydance": (_strip, (_Call("GET", "/models"),)),
}


@dataclass(frozen=True, slots=True)
class _Target:
    """A provider as configured for this run."""

    name: str
    spec: ProviderSpec
    settings: ProviderSettings
    base_url: str
    key: str | None
    env: str
    shot: Shot


@dataclass(frozen=True, slots=True)
class _Run:
    """What every check of one :func:`preflight` call shares."""

    manifest: Manifest
    api_keys: Mapping[str, str]
    base_urls: Mapping[str, str]
    simulate: bool
    timeout_s: float
    run_dir: Path | None
    session: aiohttp.ClientSession


async def preflight(
    manifest: Manifest,
    *,
    api_keys: Mapping[str, str],
    base_urls: Mapping[str, str] | None = None,
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
    simulate: bool = False,
    timeout_s: float = 10.0,
    run_dir: Path | None = None,
    storage_access: StoreAccess | None = None,
) -> list[PreflightProblem]:
    """Check that the providers and the object storage this manifest needs answer, for free.

    Call it after loading the manifest and before the first paid call, with the run's own
    options (``RunOptions.api_keys``, ``.base_urls``, ``.registry``, ``.simulate``; under
    ``--simulate`` the simulators must already be serving)::

        problems = await preflight(manifest, api_keys=options.api_keys,
                                   base_urls=options.base_urls, registry=options.registry,
                                   simulate=options.simulate)
        if problems:
            print(render_problems(problems), file=sys.stderr)  # and do not start

    All checks run concurrently; each ends within ``timeout_s`` (a storage test object being
    deleted may take up to 5 s more). Nothing is charged and nothing is left behind.

    Args:
        manifest: the loaded manifest.
        api_keys: provider name -> API key (as the CLI read them from the environment).
        base_urls: provider name -> base URL override (``--simulate``); else the manifest's
            ``providers.<name>.base_url``, else the adapter's default.
        registry: provider specs by name.
        simulate: talking to the simulators (only changes the hints).
        timeout_s: deadline of each check, in seconds.
        run_dir: handed to adapters probed through ``SupportsProbe`` (default: the manifest's
            directory); nothing is written there.
        storage_access: the store to check instead (``RunOptions.storage_access``, --simulate).

    Returns:
        The problems, providers first (by name), then storage; empty when all is well. Kinds:
        ``unreachable``: no connection, DNS failure, timeout or a 5xx (the message names the
        host:port tried; check the network, the base URL, or that the endpoint runs);
        ``auth``: a key variable is unset or the key was refused (401/402/403), or storage has no
        credentials or they were refused (the message names the variable to set);
        ``config``: a setting is missing or wrong (no base URL, a 404 or redirect at the base
        URL, a bucket that does not exist, a wrong region).
    """
    found: dict[str, PreflightProblem] = {}
    names = sorted(
        {
            s.provider
            for s in manifest.shots
            if s.provider in registry and not registry[s.provider].free
        }
    )
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        run = _Run(manifest, api_keys, base_urls or {}, simulate, timeout_s, run_dir, session)

        async def provider(name: str) -> None:
            problem = await _check_provider(run, name, registry[name])
            if problem is not None:
                found[name] = problem

        async def storage(settings: StorageSettings) -> None:
            problem = await _check_storage(settings, str(manifest.path), timeout_s, storage_access)
            if problem is not None:
                found["storage"] = problem

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(provider, name)
            if manifest.storage is not None and _uploads(manifest, registry):
                tg.start_soon(storage, manifest.storage)
    return [found[s] for s in [*names, "storage"] if s in found]


def render_problems(problems: Sequence[PreflightProblem]) -> str:
    """The problems as text for the terminal (``preflight: ok`` when there are none)."""
    if not problems:
        return "preflight: ok"
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    lines = [f"preflight: {count}, not starting"]
    for p in problems:
        lines.append(f"  {p.subject} ({p.kind}): {p.message}")
        if p.hint:
            lines.append(f"    fix: {p.hint}")
    return redaction.redact("\n".join(lines))


def _uploads(manifest: Manifest, registry: Mapping[str, ProviderSpec]) -> bool:
    """Some shot's local files go through object storage."""
    return any(
        s.provider in registry and registry[s.provider].media.needs_storage(s)
        for s in manifest.shots
    )


async def _check_provider(run: _Run, name: str, spec: ProviderSpec) -> PreflightProblem | None:
    settings = run.manifest.providers.get(name, ProviderSettings()).merged(spec.defaults)
    env = settings.api_key_env or f"{name.upper()}_API_KEY"
    key = run.api_keys.get(name)
    if spec.needs_api_key and not key:
        alt = "" if run.simulate else " (or rehearse with --simulate)"
        return PreflightProblem(name, "auth", f"{env} is not set", f"export {env}=<key>{alt}")
    base = run.base_urls.get(name) or settings.base_url or ""
    if not base and (spec.needs_api_key or name in _CALLS):
        hint = f"set providers.{name}.base_url in the manifest"
        return PreflightProblem(name, "config", "no base URL", hint)
    shot = next(s for s in run.manifest.shots if s.provider == name)
    target = _Target(name, spec, settings, base, key, env, shot)
    origin = _origin(_CALLS[name][0](base) if name in _CALLS else base) if base else name
    with anyio.move_on_after(run.timeout_s):
        if name in _CALLS:
            return await _call_all(target, run.session)
        return await _probe_adapter(target, run)
    return _unreachable(target, f"no answer from {origin} within {run.timeout_s:g} s")


async def _call_all(t: _Target, session: aiohttp.ClientSession) -> PreflightProblem | None:
    api, calls = _CALLS[t.name]
    root = api(t.base_url)
    for call in calls:
        url = root + call.path
        body = call.body(t.shot) if call.body is not None else None
        try:
            async with session.request(
                call.method, url, json=body, headers=bearer(t.key), allow_redirects=False
            ) as resp:
                status, data = resp.status, await resp.content.read(4096)
                location = resp.headers.get("Location", "")
        except aiohttp.ClientConnectorDNSError:
            return _unreachable(t, f"cannot resolve the host of {_origin(url)}")
        except aiohttp.ClientSSLError as exc:
            return _unreachable(t, f"TLS failed with {_origin(url)}: {_clean(str(exc), t)}")
        except aiohttp.ClientConnectorError as exc:
            return _unreachable(t, f"could not connect to {_origin(url)} ({_reason(exc)})")
        except TimeoutError:
            return _unreachable(t, f"no answer from {_origin(url)} (timed out)")
        except aiohttp.ClientError as exc:
            text = _clean(f"{type(exc).__name__}: {exc}", t)
            return _unreachable(t, f"{_origin(url)} broke the exchange: {text}")
        problem = _judge(t, call, url, status, data, location)
        if problem is not None:
            return problem
    return None


def _judge(
    t: _Target, call: _Call, url: str, status: int, data: bytes, location: str
) -> PreflightProblem | None:
    """The problem an HTTP answer to a free call shows, or None (the key was accepted)."""
    where = f"{call.method} {_origin(url)}{urlsplit(url).path}"
    detail = _detail(data, t)
    said = f": {detail}" if detail else ""
    if status in (401, 403):
        msg = f"{t.env} was refused ({where} answered HTTP {status}{said})"
        return PreflightProblem(t.name, "auth", msg, f"check {t.env}: wrong, revoked or no access")
    if status == 402:
        msg = f"payment required ({where} answered HTTP 402{said})"
        return PreflightProblem(t.name, "auth", msg, f"check {t.env} and the account's balance")
    if 300 <= status < 400 or (status == 404 and not call.not_found_ok):
        moved = f" to {_origin(location)}" if location else ""
        msg = f"{where} answered HTTP {status}{moved}: not the {t.name} API"
        hint = f"check providers.{t.name}.base_url (default {t.spec.defaults.base_url or 'none'})"
        return PreflightProblem(t.name, "config", msg, hint)
    if status >= 500 or status == 408:
        return _unreachable(t, f"{where} answered HTTP {status}{said}")
    return None  # 2xx, 429 or a request-level 4xx: the key was accepted


async def _probe_adapter(t: _Target, run: _Run) -> PreflightProblem | None:
    """Other adapters: their optional free ``probe()``, errors classified as above."""
    ctx = ProviderContext(
        name=t.name,
        settings=t.settings.model_copy(update={"base_url": t.base_url or t.settings.base_url}),
        run_dir=run.run_dir or run.manifest.path.parent,
        api_key=t.key,
        simulate=run.simulate,
        downloads=run.manifest.downloads,
    )
    adapter = t.spec.factory(ctx)
    try:
        if isinstance(adapter, SupportsProbe):
            await adapter.probe()
    except NotSent as exc:
        return _unreachable(t, _clean(str(exc), t))
    except RateLimited:
        return None  # the key was recognised
    except Rejected as exc:
        if exc.status in (401, 402, 403):
            msg = f"{t.env} was refused: {_clean(str(exc), t)}"
            return PreflightProblem(t.name, "auth", msg, f"check {t.env}")
        if exc.status == 404:
            msg = _clean(str(exc), t)
            return PreflightProblem(t.name, "config", msg, f"check providers.{t.name}.base_url")
    except ProviderError as exc:
        return _unreachable(t, _clean(str(exc), t))
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await adapter.aclose()
    return None


async def _check_storage(
    settings: StorageSettings, file: str, timeout_s: float, via: StoreAccess | None
) -> PreflightProblem | None:
    hint = "check storage.endpoint_url and that the service is running"
    try:
        store = ObjectStorage(settings, file=file, max_retries=0, timeout_s=timeout_s, access=via)
    except ManifestError as exc:
        return PreflightProblem("storage", "config", str(exc), "fix the manifest's storage")
    with anyio.move_on_after(timeout_s):
        try:
            await store.roundtrip()
        except StorageError as exc:
            kind = _STORAGE_KINDS.get(exc.kind, "config")
            return PreflightProblem("storage", kind, exc.detail, exc.hint or hint)
        return None
    msg = f"object storage {store.where}: no answer within {timeout_s:g} s"
    return PreflightProblem("storage", "unreachable", msg, hint)


def _unreachable(t: _Target, message: str) -> PreflightProblem:
    hint = f"check the network and providers.{t.name}.base_url"
    return PreflightProblem(t.name, "unreachable", message, hint)


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    """``connection refused``, ``network is unreachable``...: why a connection failed."""
    code = exc.os_error.errno
    return os.strerror(code).lower() if code else "connection failed"


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (no credentials, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else url.split("?")[0][:80]


def _clean(text: str, t: _Target) -> str:
    """``text`` on one line, shortened, without the key or anything :func:`redact` removes."""
    if t.key:
        text = text.replace(t.key, "***")
    return redact(" ".join(text.split()))[:200]


def _detail(data: bytes, t: _Target) -> str:
    """The provider's own short error text from a JSON error body, if any."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    text = error if isinstance(error, str) else body.get("message")
    return _clean(text, t)[:120] if isinstance(text, str) else ""


__all__ = ["PreflightProblem", "preflight", "render_problems"]
