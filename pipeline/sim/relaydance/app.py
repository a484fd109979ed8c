"""A protocol-faithful RelayDance simulator, for tests and ``--simulate``.

After https://relaydance.com/docs/api-reference/generate-video ,
https://relaydance.com/docs/api-reference/get-prediction and https://relaydance.com/docs/errors .

Routes (``BASE_PATH`` = ``/v1``), with their fault-injection names:

==========================================  =========  ======================================
POST /v1/video/generations                  submit     create a task (charged, in the ledger)
GET  /v1/video/generations/{task_id}        poll       task JSON (``query_shape``, see below)
GET  /v1/videos/{task_id}/content           content    bytes proxy, Bearer auth [inferred]
GET  /v1/models                             models     OpenAI list of the key's models
GET  /files/{task_id}.mp4?expires=&sig=     fetch      temporary signed result URL, no auth
==========================================  =========  ======================================

Behaviour: Bearer auth with the documented 401 body; 400 for invalid parameters, 404
for unknown models and tasks, 403 for balance/permission; statuses ``submitted ->
running -> succeeded | failed`` on a :class:`~pipeline.sim.common.Timeline` of
``config.latency_for(prompt)`` seconds (fixed, or a seeded draw per prompt); prompts
containing ``config.fail_prompts`` fail and are refunded ("失败的任务不计费");
``metadata.callback_url`` receives a POST of the final task JSON (loopback only, 3 attempts
[inferred]). Choices where the documentation is silent are marked [inferred] below.

Validation lives in :mod:`pipeline.sim.relaydance.rules`; tasks and their JSON shapes in
:mod:`pipeline.sim.relaydance.tasks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import time
import uuid
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from pipeline.sim.account import ACCOUNT
from pipeline.sim.account import install as install_account
from pipeline.sim.common import (
    CONFIG,
    LEDGER,
    SimConfig,
    Timeline,
    clip,
    fetch_media,
    new_app,
    origin,
)
from pipeline.sim.relaydance.rules import SIM_MODELS, check_body
from pipeline.sim.relaydance.tasks import QueryShape, SimJob, render, task_status

BASE_PATH = "/v1"

_TYPES = {  # error ``type`` per status: only authentication_error is documented
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    410: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """RelayDance's error envelope ``{"error": {"message", "type"}}``."""
    return {"error": {"message": message, "type": kind or _TYPES.get(status, "server_error")}}


def _err(status: int, message: str, kind: str | None = None, **headers: str) -> web.Response:
    return web.json_response(error_body(status, message, kind), status=status, headers=headers)


@dataclass(slots=True)
class SimState:
    """Mutable simulator state (in an app key, never a module global)."""

    balance_usd: float | None
    price_per_second_usd: float
    submits_per_minute: float | None
    transient_404_s: float
    allowed_models: frozenset[str] | None
    query_shape: QueryShape
    jobs: dict[str, SimJob] = field(default_factory=dict)
    submit_times: deque[float] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    deliveries: list[tuple[str, int | None]] = field(default_factory=list)
    secret: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    session: aiohttp.ClientSession | None = None


STATE = web.AppKey("relaydance_state", SimState)


def make_app(
    config: SimConfig,
    *,
    balance_usd: float | None = None,
    price_per_second_usd: float = 0.08,
    submits_per_minute: float | None = None,
    transient_404_s: float = 0.0,
    allowed_models: Collection[str] | None = None,
    query_shape: QueryShape = "doc",
) -> web.Application:
    """The RelayDance simulator application (see the module docstring).

    Args:
        config: key, job latency, failing prompt marker, result URL lifetime (seconds after the
            task finished; expired URLs answer 403 [I: like a signed object-store URL]).
        balance_usd: account balance; a submit it cannot cover answers 403 (None: unlimited).
        price_per_second_usd: price per video second, recorded as ``cost_usd`` in the ledger.
        submits_per_minute: per-key submit limit; excess answers 429 with Retry-After [inferred].
        transient_404_s: seconds after submit during which the task answers 404 [inferred].
        allowed_models: models this key may use (others: 403); None: all.
        query_shape: ``"doc"`` (documented), ``"task"`` (New API TaskDto wrapper) or ``"video"``
            (OpenAI video object) for the status route.
    """
    app = new_app(config, error_body)
    app[STATE] = SimState(
        balance_usd=balance_usd,
        price_per_second_usd=price_per_second_usd,
        submits_per_minute=submits_per_minute,
        transient_404_s=transient_404_s,
        allowed_models=frozenset(allowed_models) if allowed_models is not None else None,
        query_shape=query_shape,
    )
    app.router.add_post(f"{BASE_PATH}/video/generations", _submit, name="submit")
    app.router.add_get(f"{BASE_PATH}/video/generations/{{task_id}}", _poll, name="poll")
    app.router.add_get(f"{BASE_PATH}/videos/{{task_id}}/content", _content, name="content")
    app.router.add_get(f"{BASE_PATH}/models", _models, name="models")
    app.router.add_get("/files/{task_id}.mp4", _file, name="fetch")
    app.on_cleanup.append(_cleanup)
    install_account(app)  # the account's own in-flight count and submit times (/_sim/account)
    return app


# ----- handlers -------------------------------------------------------------------------------


def _auth(request: web.Request) -> web.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token.strip() != request.app[CONFIG].api_key:
        return _err(401, "The API key provided is invalid or has been revoked.")
    return None


def _rate_limited(st: SimState) -> web.Response | None:
    if st.submits_per_minute is None:
        return None
    now = time.time()
    while st.submit_times and st.submit_times[0] <= now - 60.0:
        st.submit_times.popleft()
    if len(st.submit_times) >= st.submits_per_minute:
        wait = max(1, math.ceil(st.submit_times[0] + 60.0 - now))
        return _err(429, "Rate limit exceeded for this key", **{"Retry-After": str(wait)})
    st.submit_times.append(now)
    return None


def _media_items(body: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """``(kind, url)`` of every ``metadata.content[]`` item."""
    items: list[tuple[str | None, str]] = []
    for item in (body.get("metadata") or {}).get("content") or []:
        kind = str(item.get("type", "")).removesuffix("_url")
        url = (item.get(f"{kind}_url") or {}).get("url")
        if isinstance(url, str):
            items.append((kind, url))
    return items


async def _submit(request: web.Request) -> web.Response:
    app = request.app
    st, cfg = app[STATE], app[CONFIG]
    # Not `or`: an aiohttp response is falsy on aiohttp < 3.12 (an empty mapping).
    refused = _auth(request)
    if refused is None:
        refused = _rate_limited(st)
    if refused is not None:
        return refused
    try:
        body = await request.json()
    except ValueError:
        return _err(400, "request body is not valid JSON")
    problem = check_body(body, st.allowed_models)
    if problem is not None:
        return _err(*problem)
    unusable = await fetch_media(_media_items(body))
    if unusable is not None:
        return _err(400, f"cannot fetch content: {unusable}")
    model, meta = body["model"], body.get("metadata", {})
    seconds = int(body.get("seconds", "5"))
    cost = round(st.price_per_second_usd * seconds, 6)
    if st.balance_usd is not None and st.balance_usd < cost:
        return _err(403, f"insufficient balance: ${cost:.2f} needed", "insufficient_quota")
    if st.balance_usd is not None:
        st.balance_usd -= cost
    job = SimJob(
        task_id=f"task_{uuid.uuid4().hex[:24]}",
        model=model,
        prompt=body["prompt"],
        seconds=seconds,
        ratio=meta.get("ratio", "16:9"),
        resolution=meta.get("resolution", SIM_MODELS[model].resolutions[-1]),
        timeline=Timeline(time.time(), cfg.latency_for(body["prompt"])),
        cost_usd=cost,
        origin=origin(request),
        fail=cfg.fail_prompts in body["prompt"],
        callback_url=meta.get("callback_url"),
    )
    st.jobs[job.task_id] = job
    app[LEDGER].add(job.task_id, model, body, cost_usd=cost)
    app[ACCOUNT].submitted(job.task_id, job.prompt, job.finished_at)
    task = asyncio.get_running_loop().create_task(_finish_later(app, job))
    st.tasks.add(task)
    task.add_done_callback(st.tasks.discard)
    return web.json_response({"task_id": job.task_id, "status": "submitted"})


def _job(request: web.Request) -> SimJob | web.Response:
    refused = _auth(request)
    if refused is not None:
        return refused
    st = request.app[STATE]
    job = st.jobs.get(request.match_info["task_id"])
    if job is None or time.time() - job.timeline.created < st.transient_404_s:
        return _err(404, "task not found")
    return job


async def _poll(request: web.Request) -> web.Response:
    job = _job(request)
    if isinstance(job, web.Response):
        return job
    st = request.app[STATE]
    _finalize(request.app, job)
    url = result_url(job, st, request.app[CONFIG])
    return web.json_response(render(job, st.query_shape, url))


async def _content(request: web.Request) -> web.Response:
    job = _job(request)
    if isinstance(job, web.Response):
        return job
    if task_status(job) != "succeeded":
        return _err(400, f"video is not ready (status {task_status(job)})")  # [inferred]
    return await _video(job)


async def _models(request: web.Request) -> web.Response:
    refused = _auth(request)
    if refused is not None:
        return refused
    allowed = request.app[STATE].allowed_models
    ids = [m for m in SIM_MODELS if allowed is None or m in allowed]
    data = [
        {"id": m, "object": "model", "created": 1767225600, "owned_by": "relaydance"} for m in ids
    ]
    return web.json_response({"object": "list", "data": data})


async def _file(request: web.Request) -> web.Response:
    st, cfg = request.app[STATE], request.app[CONFIG]
    job = st.jobs.get(request.match_info["task_id"])
    expires = request.query.get("expires", "")
    if job is None or not hmac.compare_digest(request.query.get("sig", ""), _sig(st, job, expires)):
        return _denied("SignatureDoesNotMatch")
    if not expires.isdigit() or time.time() > min(int(expires), job.finished_at + cfg.url_ttl_s):
        return _denied("Request has expired")  # [inferred] 403, as signed object-store URLs do
    if task_status(job) != "succeeded":
        return _denied("NoSuchKey", status=404)
    return await _video(job)


def _denied(reason: str, status: int = 403) -> web.Response:
    body = f"<Error><Code>AccessDenied</Code><Message>{reason}</Message></Error>"
    return web.Response(status=status, text=body, content_type="application/xml")


async def _video(job: SimJob) -> web.Response:
    data = await asyncio.to_thread(clip, job.seconds, job.ratio, "relaydance")
    return web.Response(body=data, content_type="video/mp4")


# ----- result URLs ------------------------------------------------------------------------------


def _sig(st: SimState, job: SimJob, expires: str) -> str:
    return hmac.new(st.secret, f"{job.task_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def result_url(job: SimJob, st: SimState, cfg: SimConfig) -> str:
    """The signed result URL: stable per task, valid ``url_ttl_s`` after the task finished."""
    expires = str(int(job.finished_at + cfg.url_ttl_s) + 1)
    return f"{job.origin}/files/{job.task_id}.mp4?expires={expires}&sig={_sig(st, job, expires)}"


# ----- final state: refund and webhook ---------------------------------------------------------


async def _finish_later(app: web.Application, job: SimJob) -> None:
    await asyncio.sleep(max(0.0, job.finished_at - time.time()))
    _finalize(app, job)


def _finalize(app: web.Application, job: SimJob) -> None:
    """Once, when the task is final: refund a failure, fire the webhook."""
    if job.finalized or job.timeline.phase() != "done":
        return
    job.finalized = True
    st = app[STATE]
    if job.fail:
        app[LEDGER].refund(job.task_id)
        if st.balance_usd is not None:
            st.balance_usd += job.cost_usd
    if job.callback_url:
        payload = render(job, "doc", result_url(job, st, app[CONFIG]))  # the documented task JSON
        task = asyncio.get_running_loop().create_task(_deliver(st, job.callback_url, payload))
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)


async def _deliver(st: SimState, url: str, payload: dict[str, Any]) -> None:
    """POST ``payload`` to a loopback ``url``; 3 attempts, 2xx = delivered [inferred]."""
    if (urlsplit(url).hostname or "") not in ("127.0.0.1", "localhost", "::1"):
        st.deliveries.append((url, None))  # the simulator never calls out of the machine
        return
    if st.session is None:
        st.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
    status: int | None = None
    for attempt in range(3):
        try:
            async with st.session.post(url, json=payload) as resp:
                status = resp.status
            if 200 <= status < 300:
                break
        except (aiohttp.ClientError, TimeoutError):
            status = None
        await asyncio.sleep(0.05 * 2**attempt)
    st.deliveries.append((url, status))


async def _cleanup(app: web.Application) -> None:
    st = app[STATE]
    for task in list(st.tasks):
        task.cancel()
    for task in list(st.tasks):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if st.session is not None:
        await st.session.close()
        st.session = None
