"""What every provider simulator shares: charge ledger, fault injection, job timing, clips, serving.

A simulator is one ``aiohttp.web.Application`` per provider (``pipeline/sim/<provider>.py``,
built by its ``make_app(config)``) that speaks the provider's documented HTTP protocol on
127.0.0.1. Tests and ``--simulate`` reach its state through the app keys below::

    app = venice.make_app(SimConfig(api_key="k", latency_s=0.2))
    app[LEDGER].charges          # every accepted (charged) submit
    app[FAULTS].add(Fault("submit", FaultKind.RESET_AFTER))   # the next submit creates the job,
                                                              # then drops the connection

Faults are matched by *route name* (``web.route(..., name="submit")``); each provider names its
routes ``submit``, ``poll``, ``fetch`` (result bytes), ``quote``, ``cancel``, ``complete``,
``models`` as they apply.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from pipeline.manifest.media import sniff
from pipeline.render.clips import tiny_mp4


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Settings of one simulator.

    Attributes:
        api_key: the only bearer token accepted.
        latency_s: seconds from submit until a job succeeds (20 % of it queued, then running).
        fail_prompts: a job whose prompt contains this text fails (moderation) when it finishes.
        url_ttl_s: seconds a result URL stays valid after the job finishes (expiry quirks).
        latency_max_s, latency_seed: if set, each job takes a draw from U(``latency_s``,
            ``latency_max_s``) seeded by ``latency_seed`` and its prompt (same in any order).
    """

    api_key: str = "sim-key"
    latency_s: float = 0.5
    fail_prompts: str = "FAIL_ME"
    url_ttl_s: float = 1800.0
    latency_max_s: float | None = None
    latency_seed: int = 0

    def latency_for(self, prompt: str) -> float:
        """Seconds the job of ``prompt`` takes (see ``latency_max_s``); wall-clock time."""
        if self.latency_max_s is None:
            return self.latency_s
        draw = random.Random(f"{self.latency_seed}:{prompt}").random()
        return self.latency_s + (self.latency_max_s - self.latency_s) * draw


@dataclass(slots=True)
class Charge:
    """One accepted submit: the provider created a job and (for most) charged for it."""

    job_id: str
    model: str
    request_sha256: str
    at: float
    key: str | None = None
    cost_usd: float | None = None
    credits: float | None = None
    refunded: bool = False


@dataclass
class Ledger:
    """Every charge the simulator accepted, in order. Tests count duplicates here."""

    charges: list[Charge] = field(default_factory=list)

    def add(self, job_id: str, model: str, body: Any, **extra: Any) -> Charge:
        """Record a charge for ``job_id``; ``body`` is the request JSON (hashed, not kept)."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        charge = Charge(job_id=job_id, model=model, request_sha256=digest, at=time.time(), **extra)
        self.charges.append(charge)
        return charge

    def refund(self, job_id: str) -> None:
        """Mark the charge of ``job_id`` refunded (failed or cancelled job)."""
        for charge in self.charges:
            if charge.job_id == job_id:
                charge.refunded = True

    def __len__(self) -> int:
        return len(self.charges)


class FaultKind(StrEnum):
    """What an injected fault does to one request."""

    RATE_LIMIT = "429"  #: answer 429 with Retry-After; the handler does not run
    SERVER_ERROR = "500"  #: answer 500; the handler does not run
    SERVER_ERROR_AFTER = "500_after"  #: run the handler (the job is created), then answer 500
    RESET_BEFORE = "reset_before"  #: drop the connection before the handler runs
    RESET_AFTER = "reset_after"  #: run the handler (the job is created), then drop the connection
    SLOW = "slow"  #: sleep ``delay_s`` before handling
    TRUNCATE = "truncate"  #: send full headers but only half of the body, then drop
    EXPIRE = "expire"  #: answer 410 Gone (an expired result URL)


@dataclass(slots=True)
class Fault:
    """One scripted fault on route ``route`` (``"*"`` matches every route), ``times`` times.

    With ``until`` (a ``time.monotonic()`` deadline) it applies to every matching request until
    then instead, e.g. a 429 storm of a few seconds.
    """

    route: str
    kind: FaultKind
    times: int = 1
    retry_after: float = 1.0
    delay_s: float = 1.0
    until: float | None = None


@dataclass
class FaultPlan:
    """Scripted faults, consumed in order.

    ``hits`` counts requests per route name; ``log`` keeps ``(time.monotonic(), route, status)``
    of every request, for tests that check rates and windows.
    """

    faults: list[Fault] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    log: list[tuple[float, str, int]] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        """Schedule ``fault``."""
        self.faults.append(fault)

    def take(self, route: str) -> Fault | None:
        """The next fault for ``route`` (consumed), or None."""
        self.hits[route] = self.hits.get(route, 0) + 1
        now = time.monotonic()
        for fault in self.faults:
            if fault.until is not None:
                if fault.route in (route, "*") and now < fault.until:
                    return fault
                continue
            if fault.route in (route, "*") and fault.times > 0:
                fault.times -= 1
                return fault
        return None


CONFIG = web.AppKey("config", SimConfig)
LEDGER = web.AppKey("ledger", Ledger)
FAULTS = web.AppKey("faults", FaultPlan)

ErrorBody = Callable[[int, str], Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def fault_middleware(error_body: ErrorBody) -> Any:
    """An aiohttp middleware applying the app's :class:`FaultPlan` in the provider's error shape.

    Args:
        error_body: ``(status, message) -> JSON`` in the provider's own error envelope.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        plan = request.app[FAULTS]
        response = await _apply(request, handler, plan.take(route), error_body)
        plan.log.append((time.monotonic(), route, response.status))
        return response

    return middleware


async def _apply(
    request: web.Request, handler: Handler, fault: Fault | None, error_body: ErrorBody
) -> web.StreamResponse:
    """Handle ``request`` with ``fault`` applied (None: normally)."""
    if fault is None:
        return await handler(request)
    kind = fault.kind
    if kind == FaultKind.RATE_LIMIT:
        headers = {"Retry-After": f"{fault.retry_after:g}"}
        return web.json_response(
            error_body(429, "Rate limit exceeded"), status=429, headers=headers
        )
    if kind == FaultKind.SERVER_ERROR:
        return web.json_response(error_body(500, "Internal server error"), status=500)
    if kind == FaultKind.EXPIRE:
        return web.json_response(error_body(410, "Gone"), status=410)
    if kind == FaultKind.RESET_BEFORE:
        _drop(request)
        return web.Response(status=500)  # never reaches the client: the socket is gone
    if kind == FaultKind.SLOW:
        await asyncio.sleep(fault.delay_s)
        return await handler(request)
    response = await handler(request)
    if kind == FaultKind.SERVER_ERROR_AFTER:
        return web.json_response(error_body(500, "Internal server error"), status=500)
    if kind == FaultKind.RESET_AFTER:
        _drop(request)
        return web.Response(status=500)  # never reaches the client: the socket is gone
    return await _truncated(request, response)


async def _truncated(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    body = response.body if isinstance(response, web.Response) else b""
    data = body if isinstance(body, bytes) else b""
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(data)
    await stream.prepare(request)
    await stream.write(data[: len(data) // 2])
    _drop(request)
    return stream


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True, slots=True)
class Timeline:
    """When a simulated job is queued, running and finished (seconds since the epoch)."""

    created: float
    latency_s: float

    def phase(self, now: float | None = None) -> str:
        """``"queued"`` (first 20 %), ``"running"``, or ``"done"``."""
        elapsed = (time.time() if now is None else now) - self.created
        if elapsed >= self.latency_s:
            return "done"
        return "queued" if elapsed < 0.2 * self.latency_s else "running"

    def progress(self, now: float | None = None) -> float:
        """Fraction 0.0-1.0 of the job's time elapsed."""
        elapsed = (time.time() if now is None else now) - self.created
        return 1.0 if self.latency_s <= 0 else min(1.0, max(0.0, elapsed / self.latency_s))


@lru_cache(maxsize=64)
def clip(seconds: int, aspect_ratio: str = "16:9", label: str = "sim") -> bytes:
    """A real, small H.264 MP4 of ``seconds`` (cached; rendering takes ~10 ms per second)."""
    ratio = aspect_ratio if aspect_ratio.count(":") == 1 else "16:9"
    return tiny_mp4(max(1, min(seconds, 30)), ratio, label=label)


def origin(request: web.Request) -> str:
    """``scheme://host:port`` of the simulator as the client reached it (for result URLs)."""
    return f"{request.scheme}://{request.host}"


def new_app(config: SimConfig, error_body: ErrorBody) -> web.Application:
    """An application with the config, an empty ledger and fault plan, and the fault middleware."""
    app = web.Application(middlewares=[fault_middleware(error_body)])
    app[CONFIG] = config
    app[LEDGER] = Ledger()
    app[FAULTS] = FaultPlan()
    app.router.add_get("/_sim/ledger", _ledger, name="sim-ledger")
    return app


async def _ledger(request: web.Request) -> web.Response:
    """``GET /_sim/ledger``: every charge as JSON, for tests that run the simulator standing."""
    charges = [
        {
            "job_id": c.job_id,
            "key": c.key,
            "model": c.model,
            "cost_usd": c.cost_usd,
            "credits": c.credits,
            "refunded": c.refunded,
        }
        for c in request.app[LEDGER].charges
    ]
    return web.json_response(charges)


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: any free port) and yield ``http://host:port``."""
    # Keep-alive connections get 2 s to finish at shutdown (aiohttp's default waits 60 s).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


#: Longest a simulator waits for one media URL (s).
MEDIA_TIMEOUT_S = 10.0
#: Host names of this machine: the only media hosts a simulator can actually reach.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


async def fetch_media(items: Iterable[tuple[str | None, str]]) -> str | None:
    """Fetch the media URLs of a submit, as the real service would, and check their types.

    Args:
        items: ``(kind, url)`` pairs; ``kind`` is ``"image"``, ``"video"``, ``"audio"`` or None
            (any of them). ``data:`` URLs are decoded; http(s) URLs on loopback (object storage
            such as moto, or another local server) are downloaded. Other hosts cannot be reached
            from a sandbox, so the simulator trusts them [inferred].

    Returns:
        None when every URL served media of the declared kind, else what went wrong.
    """
    timeout = aiohttp.ClientTimeout(total=MEDIA_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for kind, url in items:
            problem = await _check_one(session, kind, url)
            if problem is not None:
                return problem
    return None


#: Fewer decoded bytes than this cannot show a file's type (the longest signature is 12 bytes).
_SNIFF_BYTES = 12
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _data_head(url: str) -> tuple[str, bytes] | None:
    """``(declared MIME, first decoded bytes)`` of a ``data:<mime>;base64,...`` URL, or None.

    Decoding is lenient like the services' own: characters outside the base64 alphabet (such as
    the ``...`` of a shortened example) are skipped and missing padding is added.
    """
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    chunk = _NOT_BASE64.sub(b"", payload[:256].encode("ascii", "ignore"))
    chunk = chunk[: len(chunk) - len(chunk) % 4 if len(chunk) % 4 == 1 else len(chunk)]
    try:
        head = base64.b64decode(chunk + b"=" * (-len(chunk) % 4))
    except ValueError:
        return None
    return header.removesuffix(";base64").split(";", 1)[0].lower(), head


async def _check_one(session: aiohttp.ClientSession, kind: str | None, url: str) -> str | None:
    shown = url.split("?")[0][:120]
    declared: str | None = None
    if url.startswith("data:"):
        parsed = _data_head(url)
        if parsed is None:
            return "invalid data: URL"
        declared, head = parsed
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"unsupported media URL scheme: {shown}"
        if (parts.hostname or "") not in LOOPBACK:
            return None
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return f"media URL answered HTTP {resp.status}: {shown}"
                head = await resp.content.read(64)
                while await resp.content.readany():
                    pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"media URL unreachable ({type(exc).__name__}): {shown}"
    mime = sniff(head)
    if mime is None and declared is not None and len(head) < _SNIFF_BYTES:
        mime = declared  # a shortened example payload ("iVBORw0K..."): trust its declared type
    if mime is None or (kind is not None and not mime.startswith(f"{kind}/")):
        expected = kind or "image, video or audio"
        return f"media is {mime or 'of an unknown type'}, expected {expected}: {shown}"
    return None
