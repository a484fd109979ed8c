"""State of the Venice simulator (:mod:`pipeline.sim.venice.app`) and its guard middleware.

:class:`VeniceState` keeps jobs, private links, consent attestations and the per-key request
and error-budget windows (https://docs.venice.ai/api-reference/rate-limiting). The guard
runs before every priced route: auth (none -> 402 x402, wrong key -> 401), the JSON body
(35 MB cap), the error-budget lockout and the per-minute request limits with
``x-ratelimit-*-requests`` headers.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

from pipeline.sim.common import CONFIG, Handler, bearer_token
from pipeline.sim.venice import rules
from pipeline.sim.venice.models import MAX_BODY_BYTES

_RES_FACTOR = {"480p": 1.0, "720p": 2.0, "1080p": 4.0, "4k": 8.0}  # price factors [inferred]
#: Route name -> rate-limit bucket (None: auth and budget only).
_GUARDED: dict[str, str | None] = {
    "submit": "queue",
    "poll": "retrieve",
    "quote": None,
    "complete": None,
}


@dataclass(frozen=True, slots=True)
class VeniceSimOptions:
    """Venice-specific simulator settings (keyword options of :func:`make_app`).

    Attributes:
        queue_per_minute / retrieve_per_minute: per-key request limits (documented: 40 / 120).
        error_budget: failed 4xx per key and model tolerated in ``error_window_s``
            (documented: more than 20).
        error_window_s / lockout_s: the budget window and the lockout length (documented: 30 s).
        download_max_gets: GETs a private link serves before answering 410 [I: 3].
        price_per_second: USD per second at factor 1.0 (480p) [inferred].
        max_body_bytes: JSON body cap (35 MB).
        inference_fail_prompts: a prompt containing it fails on retrieve with 500 [inferred].
        guide_statuses: answer lowercase ``queued``/``running``/``completed`` as the guides
            do instead of the OpenAPI spec's ``PROCESSING``/``COMPLETED`` (the docs disagree).
    """

    queue_per_minute: int = 40
    retrieve_per_minute: int = 120
    error_budget: int = 20
    error_window_s: float = 30.0
    lockout_s: float = 30.0
    download_max_gets: int = 3
    price_per_second: float = 0.05
    max_body_bytes: int = MAX_BODY_BYTES
    inference_fail_prompts: str = "INFERENCE_FAIL"
    guide_statuses: bool = False


@dataclass(slots=True)
class SimJob:
    """One queued job (times in Unix seconds, ``cost_usd`` in USD)."""

    queue_id: str
    model: str
    prompt: str
    seconds: int
    ratio: str
    created: float
    cost_usd: float
    private: bool
    deleted: bool = False


@dataclass(slots=True)
class Link:
    """A private download link: its job, GETs served, whether it was revoked."""

    queue_id: str
    gets: int = 0
    revoked: bool = False


@dataclass
class VeniceState:
    """Everything the simulator remembers (one per app, under :data:`STATE`)."""

    options: VeniceSimOptions
    jobs: dict[str, SimJob] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    attested: set[str] = field(default_factory=set)
    requests: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    locked_until: dict[tuple[str, str], float] = field(default_factory=dict)
    consent_requests: int = 0

    def price(self, model: str, seconds: int, resolution: str | None) -> float:
        """Deterministic USD price of a job (the quote and the queue charge) [inferred]."""
        factor = _RES_FACTOR.get(resolution or "", 1.0)
        return round(self.options.price_per_second * seconds * factor, 4)

    def limit(self, bucket: str) -> int:
        """Requests per minute of ``bucket`` (``queue`` or ``retrieve``)."""
        opts = self.options
        return opts.queue_per_minute if bucket == "queue" else opts.retrieve_per_minute

    def admit(self, token: str, bucket: str, now: float) -> bool:
        """Count one request against the per-minute limit; False when it is exhausted."""
        window = self.requests.setdefault((token, bucket), deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.limit(bucket):
            return False
        window.append(now)
        return True

    def limit_headers(self, token: str, bucket: str, now: float) -> dict[str, str]:
        """``x-ratelimit-*-requests`` headers; the reset is Unix milliseconds."""
        window = self.requests.get((token, bucket)) or deque()
        reset = (window[0] if window else now) + 60.0
        return {
            "x-ratelimit-limit-requests": str(self.limit(bucket)),
            "x-ratelimit-remaining-requests": str(max(0, self.limit(bucket) - len(window))),
            "x-ratelimit-reset-requests": str(int(reset * 1000)),
        }

    def record(self, token: str, model: str, status: int, now: float) -> None:
        """Count a failed 4xx (not 429) against the error budget; lock out past it."""
        if not token or not 400 <= status < 500 or status == 429:
            return
        window = self.failures.setdefault((token, model), deque())
        window.append(now)
        while window and window[0] <= now - self.options.error_window_s:
            window.popleft()
        if len(window) > self.options.error_budget:
            self.locked_until[(token, model)] = now + self.options.lockout_s


STATE = web.AppKey("venice_state", VeniceState)
#: The parsed JSON body of a guarded request (set by the guard middleware).
#: Where the guard leaves the parsed body for the handler: a typed key on aiohttp >= 3.14 (which
#: warns about string keys), the plain string before it.
BODY: Any = web.RequestKey("venice_body", dict) if hasattr(web, "RequestKey") else "venice_body"


# ----- guard: auth, body, error budget, rate limits -----------------------------------------


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


async def _json_body(request: web.Request, state: VeniceState) -> web.Response | dict[str, Any]:
    if request.content_type != "application/json":
        return rules.error(400, "'Content-Type' must be 'application/json'")
    raw = await _read_body(request, state.options.max_body_bytes)
    if raw is None:
        body = {"code": "PAYLOAD_TOO_LARGE", "error": "Request payload is too large (max 35 MB)"}
        return web.json_response(body, status=413)
    parsed = await anyio.to_thread.run_sync(_loads, raw) if len(raw) > 1 << 20 else _loads(raw)
    if not isinstance(parsed, dict):
        return rules.error(400, "Invalid JSON request")
    return parsed


async def _precheck(
    request: web.Request, state: VeniceState, token: str, bucket: str | None, now: float
) -> tuple[web.Response | None, str]:
    if not token:
        return rules.x402(request), ""
    if token != request.app[CONFIG].api_key:
        return rules.error(401, "Authentication failed"), ""
    body = await _json_body(request, state)
    if isinstance(body, web.Response):
        return body, ""
    request[BODY] = body
    model = str(body.get("model", ""))
    until = state.locked_until.get((token, model), 0.0)
    if until > now:
        text = (
            f"Too many failed attempts (> {state.options.error_budget}) resulting in a "
            f"non-success status code. Please wait 30s and try again."
        )
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-resets": str(int(until * 1000))}
        return rules.error(429, text, headers), model
    if bucket is not None and not state.admit(token, bucket, now):
        return rules.error(
            429, "Rate limit exceeded", state.limit_headers(token, bucket, now)
        ), model
    return None, model


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, body, error budget and rate limits before every guarded route."""
    route = request.match_info.route.name or ""
    if route not in _GUARDED:
        return await handler(request)
    state, now, bucket = request.app[STATE], time.time(), _GUARDED[route]
    token = bearer_token(request) or ""
    early, model = await _precheck(request, state, token, bucket, now)
    response = early if early is not None else await handler(request)
    state.record(token, model, response.status, now)
    if bucket is not None and token and not response.prepared:
        response.headers.update(state.limit_headers(token, bucket, now))
    return response
