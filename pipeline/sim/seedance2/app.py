"""Simulator of the seedance2.ink Open API (https://www.seedance2.ink/docs) on 127.0.0.1.

Routes (paths under ``/api/open/v1`` like the real service, so :data:`BASE_PATH` is empty)::

    GET  /api/open/v1/models                               name="models"  (no auth)
    POST /api/open/v1/video/generations                    name="submit"  (charged)
    GET  /api/open/v1/video/generations/{requestId}        name="poll"
    POST /api/open/v1/video/generations/{requestId}/cancel name="cancel"
    GET  /open-api-results/{requestId}.mp4                 name="fetch"   (public, like R2)

Behaviour (``[inferred]`` where the service does not document it):

- errors use the envelope ``{"success": false, "error": {"code", "message"}}``: 401
  ``unauthorized`` "Invalid API key" [inferred: status], 400 ``invalid_*`` validation errors
  [inferred], 402
  ``insufficient_credits`` with ``make_app(credits_balance=…)`` [inferred], 404 ``not_found``
  [inferred], 429
  ``rate_limited`` + ``Retry-After`` with ``make_app(submits_per_minute=…)`` [inferred];
- validation: model, prompt, integer duration allowed for the model, ratio,
  resolution, 1-5 https ``mediaUrls`` (no ``data:``; ``http://`` loopback only with
  ``allow_loopback_media=True``), string ``webhookUrl``, object ``metadata``; omitted fields
  default to 5 s / 720p / 16:9 [inferred];
- ``creditsCharged`` = per-second credits x duration x resolution factor (480p 0.6, 720p 1,
  1080p 1.5) x 1.6 with ``mediaUrls``, rounded up: 40 for T2V 5 s 720p and 64 for I2V (the
  documented examples); every accepted submit is charged in ``app[LEDGER]`` (``credits``, ``key`` =
  ``metadata.client_ref``);
- status ``queued`` -> ``processing`` -> ``succeeded`` on :class:`~pipeline.sim.common.Timeline`;
  prompts containing ``config.fail_prompts`` end ``failed`` with ``content_policy`` and a ledger
  refund [inferred]; cancel of queued/processing -> ``cancelled`` + refund, of a finished task ->
  400 ``invalid_state`` [inferred];
- ``output.url`` points back at the simulator and serves a real MP4 (no auth) until
  ``config.url_ttl_s`` after the task finished, then 404 like a deleted R2 object [inferred];
- ``webhookUrl``: the final task JSON is POSTed once (success, failure or cancel), only to
  loopback URLs, fire and forget with a 2 s timeout, recorded in ``app[STATE].webhooks`` [inferred].

Validation and the credit price live in :mod:`pipeline.sim.seedance2.rules`.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from pipeline.sim.common import (
    CONFIG,
    LEDGER,
    LOOPBACK,
    SimConfig,
    Timeline,
    bearer_token,
    clip,
    fetch_media,
    new_app,
    origin,
)
from pipeline.sim.seedance2.rules import (
    MEDIA_FACTOR,
    RATIOS,
    RESOLUTION_FACTOR,
    SIM_MODELS,
    TaskRequest,
    credits_for,
    validate,
)

BASE_PATH = ""
API = "/api/open/v1"
RESULTS = "/open-api-results"

_CODES = {400: "invalid_request", 401: "unauthorized", 402: "insufficient_credits"}
_CODES |= {404: "not_found", 410: "gone", 429: "rate_limited", 500: "internal_error"}


@dataclass(frozen=True, slots=True)
class Options:
    """Provider-specific options of :func:`make_app` (see its docstring)."""

    submits_per_minute: float | None = None
    allow_loopback_media: bool = False
    credits_balance: float | None = None


@dataclass(slots=True)
class SimTask:
    """One generation task as the simulated service stores it (``origin``: for webhooks)."""

    request_id: str
    req: TaskRequest
    credits: int
    timeline: Timeline
    fail: bool
    origin: str
    cancelled: bool = False
    refunded: bool = False


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook attempt: ``status`` is the receiver's HTTP status, None when not delivered."""

    url: str
    payload: dict[str, Any]
    status: int | None
    error: str = ""


@dataclass
class SimState:
    """Mutable state of one simulator app (``app[STATE]``)."""

    options: Options
    balance: float | None = None
    tasks: dict[str, SimTask] = field(default_factory=dict)
    submit_times: deque[float] = field(default_factory=deque)
    webhooks: list[WebhookDelivery] = field(default_factory=list)
    fetches_with_auth: int = 0
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None


STATE = web.AppKey("seedance2_state", SimState)


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The error envelope ``{"success": false, "error": {code, message}}``."""
    return {
        "success": False,
        "error": {"code": code or _CODES.get(status, "error"), "message": message},
    }


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, message, code), status=status, headers=headers)


# ----- task state ---------------------------------------------------------------------------------


def _status(app: web.Application, task: SimTask) -> str:
    """The task's current status; refunds a failed task the first time it is seen failed."""
    if task.cancelled:
        return "cancelled"
    phase = task.timeline.phase()
    if phase != "done":
        return "queued" if phase == "queued" else "processing"
    if task.fail:
        _refund(app, task)
        return "failed"
    return "succeeded"


def _refund(app: web.Application, task: SimTask) -> None:
    if task.refunded:
        return
    task.refunded = True
    app[LEDGER].refund(task.request_id)
    state = app[STATE]
    if state.balance is not None:
        state.balance += task.credits


def _task_json(task: SimTask, status: str, base: str) -> dict[str, Any]:
    """The task as ``GET …/{requestId}`` returns it."""
    output = None
    error = None
    if status == "succeeded":
        output = {"type": "video", "url": f"{base}{RESULTS}/{task.request_id}.mp4"}
    elif status == "failed":
        error = {"code": "content_policy", "message": "The prompt was flagged by moderation"}
    req = task.req
    return {
        "success": True,
        "requestId": task.request_id,
        "status": status,
        "model": req.model,
        "prompt": req.prompt,
        "duration": req.duration,
        "aspectRatio": req.aspect_ratio,
        "resolution": req.resolution,
        "metadata": req.metadata,
        "output": output,
        "error": error,
    }


# ----- handlers -----------------------------------------------------------------------------------


def _unauthorized(request: web.Request) -> web.Response | None:
    if bearer_token(request) != request.app[CONFIG].api_key:
        return _error(401, "unauthorized", "Invalid API key")
    return None


def _rate_limited(state: SimState, now: float) -> web.Response | None:
    limit = state.options.submits_per_minute
    if limit is None:
        return None
    window = state.submit_times
    while window and now - window[0] >= 60.0:
        window.popleft()
    if len(window) >= limit:
        wait = max(1, math.ceil(60.0 - (now - window[0])))
        return _error(429, "rate_limited", "Too many requests", {"Retry-After": str(wait)})
    window.append(now)
    return None


async def _submit(request: web.Request) -> web.Response:
    app, state = request.app, request.app[STATE]
    # Not `or`: an aiohttp response is falsy on aiohttp < 3.12 (an empty mapping).
    denied = _unauthorized(request)
    if denied is None:
        denied = _rate_limited(state, time.time())
    if denied is not None:
        return denied
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid_request", "the request body must be JSON")
    req = validate(body, state.options.allow_loopback_media)
    if isinstance(req, tuple):
        return _error(400, *req)
    unusable = await fetch_media((None, url) for url in req.media_urls or [])
    if unusable is not None:
        return _error(400, "invalid_media_urls", f"could not use mediaUrls: {unusable}")
    credits = credits_for(req.model, req.duration, req.resolution, bool(req.media_urls))
    if state.balance is not None:
        if state.balance < credits:
            return _error(402, "insufficient_credits", "Not enough credits")
        state.balance -= credits
    config = app[CONFIG]
    task = SimTask(
        request_id=f"req_{uuid.uuid4().int % 10**16:016d}",
        req=req,
        credits=credits,
        timeline=Timeline(time.time(), config.latency_s),
        fail=bool(config.fail_prompts) and config.fail_prompts in req.prompt,
        origin=origin(request),
    )
    state.tasks[task.request_id] = task
    key = (req.metadata or {}).get("client_ref")
    app[LEDGER].add(task.request_id, req.model, body, key=key, credits=float(credits))
    if req.webhook_url:
        _schedule_webhook(app, task, config.latency_s, on_cancel=False)
    answer = {"success": True, "requestId": task.request_id, "status": "queued"}
    return web.json_response({**answer, "creditsCharged": credits})


def _find(request: web.Request) -> SimTask | web.Response:
    denied = _unauthorized(request)
    if denied is not None:
        return denied
    task = request.app[STATE].tasks.get(request.match_info["request_id"])
    return task if task is not None else _error(404, "not_found", "Task not found")


async def _poll(request: web.Request) -> web.Response:
    task = _find(request)
    if isinstance(task, web.Response):
        return task
    return web.json_response(_task_json(task, _status(request.app, task), origin(request)))


async def _cancel(request: web.Request) -> web.Response:
    task = _find(request)
    if isinstance(task, web.Response):
        return task
    status = _status(request.app, task)
    if status not in ("queued", "processing"):
        message = f"Task {task.request_id} cannot be cancelled: already {status}"
        return _error(400, "invalid_state", message)
    task.cancelled = True
    _refund(request.app, task)
    if task.req.webhook_url:
        _schedule_webhook(request.app, task, 0.0, on_cancel=True)
    return web.json_response(_task_json(task, "cancelled", origin(request)))


async def _fetch(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if "Authorization" in request.headers:
        state.fetches_with_auth += 1
    task = state.tasks.get(request.match_info["request_id"])
    if task is None or _status(request.app, task) != "succeeded":
        return web.Response(status=404, text="Not Found")
    finished = task.timeline.created + task.timeline.latency_s
    if time.time() > finished + request.app[CONFIG].url_ttl_s:
        return web.Response(status=404, text="Not Found")  # the object was deleted [inferred]
    data = await asyncio.to_thread(clip, task.req.duration, task.req.aspect_ratio, "seedance2")
    return web.Response(body=data, content_type="video/mp4")


async def _models(request: web.Request) -> web.Response:
    data = [
        {
            "id": model,
            "durations": list(durations),
            "aspectRatios": list(RATIOS),
            "resolutions": list(RESOLUTION_FACTOR),
            "pricing": {
                "creditsPerSecond": per_second,
                "resolutionMultipliers": dict(RESOLUTION_FACTOR),
                "mediaMultiplier": MEDIA_FACTOR,
            },
        }
        for model, (durations, per_second) in SIM_MODELS.items()
    ]
    return web.json_response({"success": True, "data": data})


# ----- webhooks -----------------------------------------------------------------------------------


def _schedule_webhook(
    app: web.Application, task: SimTask, delay: float, *, on_cancel: bool
) -> None:
    state = app[STATE]
    job = asyncio.get_running_loop().create_task(_deliver(app, task, delay, on_cancel))
    state.pending.add(job)
    job.add_done_callback(state.pending.discard)


async def _deliver(app: web.Application, task: SimTask, delay: float, on_cancel: bool) -> None:
    await asyncio.sleep(delay)
    status = _status(app, task)
    if status == "cancelled" and not on_cancel:
        return  # the cancel sent its own delivery
    url = task.req.webhook_url or ""
    payload = _task_json(task, status, task.origin)
    state = app[STATE]
    if urlsplit(url).hostname not in LOOPBACK or state.session is None:
        state.webhooks.append(WebhookDelivery(url, payload, None, "not a loopback URL"))
        return
    try:
        async with state.session.post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=2.0)
        ) as resp:
            state.webhooks.append(WebhookDelivery(url, payload, resp.status))
    except (aiohttp.ClientError, TimeoutError) as exc:
        state.webhooks.append(WebhookDelivery(url, payload, None, type(exc).__name__))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.session = aiohttp.ClientSession()
    yield
    pending = list(state.pending)
    for job in pending:
        job.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await state.session.close()
    state.session = None


def make_app(
    config: SimConfig | None = None,
    *,
    submits_per_minute: float | None = None,
    allow_loopback_media: bool = False,
    credits_balance: float | None = None,
) -> web.Application:
    """The seedance2.ink simulator (see the module docstring for its behaviour).

    Args:
        config: key, latency, failing prompt text, result URL lifetime.
        submits_per_minute: accept at most this many submits per rolling minute, then 429 with
            ``Retry-After`` (None: unlimited).
        allow_loopback_media: accept ``http://127.0.0.1``/``localhost`` URLs in ``mediaUrls``
            (for ``--simulate`` rehearsals whose media are served locally).
        credits_balance: the account's credits; a submit above the balance is a 402 (None:
            unlimited). Refunds are credited back.

    Returns:
        The application; state in ``app[STATE]`` (tasks, webhooks), charges in ``app[LEDGER]``.
    """
    app = new_app(config or SimConfig(), error_body)
    options = Options(submits_per_minute, allow_loopback_media, credits_balance)
    app[STATE] = SimState(options=options, balance=credits_balance)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get(f"{API}/models", _models, name="models")
    app.router.add_post(f"{API}/video/generations", _submit, name="submit")
    app.router.add_get(f"{API}/video/generations/{{request_id}}", _poll, name="poll")
    app.router.add_post(f"{API}/video/generations/{{request_id}}/cancel", _cancel, name="cancel")
    app.router.add_get(f"{RESULTS}/{{request_id}}.mp4", _fetch, name="fetch")
    return app
