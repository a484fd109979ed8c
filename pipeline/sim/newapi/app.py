"""Simulator of a New-API-style gateway serving Vidu Q3.

After the gateway's page https://docs.uniall.ai/zh-CN/models/video/vidu/create-task-old and
New API's routes and DTOs (https://github.com/QuantumNous/new-api, router/relay-router.go,
dto/openai_video.go, dto/task.go; query shapes: https://docs.newapi.pro/api/query-video).

Routes (route names for fault injection in brackets)::

    POST /v1/video/generations            [submit]   seed gateway body -> OpenAIVideo-style job
    GET  /v1/video/generations/{task_id}  [poll]     legacy query, shape A, B or C
    GET  /v1/videos/{task_id}             [video]    OpenAI video object (shape C)
    GET  /v1/videos/{task_id}/content     [content]  MP4 bytes through the gateway (auth)
    GET  /v1/models                       [models]   OpenAI model list
    GET  /cdn/vidu/{task_id}.mp4?expires=&sig=  [fetch]  "upstream CDN" result URL (no auth)

Behaviour: Bearer auth with an OpenAI-shaped 401; validation errors as task errors
``{"code":"invalid_request","message","data":null}`` with 400; an unknown model answers
``get_channel_failed`` with 503 [I: status]; insufficient quota answers 403
``insufficient_user_quota`` [inferred]; every accepted submit is charged in ``app[LEDGER]`` and
answered with ``X-New-Api-Other-Ratios`` (as New API does); statuses progress NOT_START ->
SUBMITTED -> QUEUED -> IN_PROGRESS ("NN%") -> SUCCESS by :class:`~pipeline.sim.common.Timeline`;
prompts containing ``config.fail_prompts`` end in FAILURE with the Vidu ``err_code`` and a
ledger refund (New API refunds the quota of a failed task); unknown (or, with
``not_exist_for_s``, too fresh) tasks answer 400 ``task_not_exist`` (New API's answer for
unknown ids); result URLs are signed like a CDN and answer 403 once ``config.url_ttl_s``
after the job finished have passed [inferred] (the URL is stored at completion, so polling again
returns the same, stale URL, as a gateway's task record would [inferred]).

This module holds the routes, their error envelopes and :func:`make_app`. Validation lives in
:mod:`pipeline.sim.newapi.rules`; the task state and the JSON shapes of a task live in
:mod:`pipeline.sim.newapi.tasks`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from pipeline.sim.common import (
    CONFIG,
    LEDGER,
    SimConfig,
    bearer_token,
    clip,
    fetch_media,
    new_app,
)
from pipeline.sim.newapi.rules import MODELS, duration_of, resolution_of, validate
from pipeline.sim.newapi.tasks import (
    STATE,
    GatewayState,
    QueryShape,
    SimTask,
    observe,
    shape_a,
    shape_b,
    shape_c,
    signature,
)

BASE_PATH = ""

_FAULT_CODES = {429: "rate_limit_exceeded", 500: "internal_server_error", 410: "gone"}  # [inferred]
_RES_RATIO = {"540p": 0.5, "720p": 1.0, "1080p": 2.0}  # [inferred] X-New-Api-Other-Ratios values


# ----- error envelopes -----------------------------------------------------------------------


def _relay_body(status: int, message: str, code: str = "") -> dict[str, Any]:
    return {"error": {"message": message, "type": "new_api_error", "param": "", "code": code}}


def _fault_body(status: int, message: str) -> dict[str, Any]:
    return _relay_body(status, message, _FAULT_CODES.get(status, ""))


def relay_error(status: int, message: str, code: str = "") -> web.Response:
    """An OpenAI-shaped relay error ``{"error":{message,type,param,code}}`` (New API's)."""
    return web.json_response(_relay_body(status, message, code), status=status)


def task_error(status: int, code: str, message: str) -> web.Response:
    """A task error ``{"code","message","data":null}`` (New API ``dto.TaskError``)."""
    return web.json_response({"code": code, "message": message, "data": None}, status=status)


def _denied(request: web.Request) -> web.Response | None:
    if bearer_token(request) == request.app[CONFIG].api_key:
        return None
    return relay_error(401, "invalid token (无效的令牌)", "invalid_token")  # wording [inferred]


# ----- handlers ------------------------------------------------------------------------------


def _action(body: dict[str, Any]) -> str:
    if body.get("reference_image_urls"):
        return "referenceGenerate"
    if body.get("last_image"):
        return "firstTailGenerate"
    return "generate" if body.get("image") else "textGenerate"


def _ratios_header(model: str, duration: int) -> str:
    res = resolution_of(model)
    return json.dumps({"seconds": duration / 5, "resolution": _RES_RATIO.get(res, 1.0)})


async def submit(request: web.Request) -> web.Response:
    """POST /v1/video/generations: validate, charge, answer the OpenAIVideo-style job."""
    if (denied := _denied(request)) is not None:
        return denied
    try:
        body = await request.json()
    except ValueError:
        return task_error(400, "invalid_request", "request body is not valid JSON")
    problem = validate(body)
    if problem:
        status, code, message = problem
        return task_error(status, code, message)
    images = [body.get("image"), body.get("last_image"), *(body.get("reference_image_urls") or [])]
    unusable = await fetch_media(("image", u) for u in images if isinstance(u, str))
    if unusable is not None:
        return task_error(400, "invalid_request", f"cannot use image: {unusable}")
    state, config = request.app[STATE], request.app[CONFIG]
    if state.quota_jobs is not None and len(request.app[LEDGER]) >= state.quota_jobs:
        return relay_error(
            403, "user quota is not enough (用户额度不足)", "insufficient_user_quota"
        )
    task = SimTask(
        task_id=f"task_{uuid.uuid4().hex[:24]}",
        model=body["model"],
        duration=duration_of(body.get("duration", 5)) or 5,
        aspect_ratio=body.get("aspect_ratio", "16:9"),
        created=time.time(),
        action=_action(body),
        fail=config.fail_prompts in body["prompt"],
    )
    state.tasks[task.task_id] = task
    request.app[LEDGER].add(task.task_id, task.model, body)
    answer = {
        "id": task.task_id,
        "task_id": task.task_id,
        "object": "video.generation.job",
        "model": task.model,
        "status": "queued",
        "progress": 0,
        "created_at": int(task.created),
    }
    headers = {"X-New-Api-Other-Ratios": _ratios_header(task.model, task.duration)}
    return web.json_response(answer, headers=headers)


def _lookup(request: web.Request) -> SimTask | None:
    state = request.app[STATE]
    task = state.tasks.get(request.match_info["task_id"])
    if task is None or time.time() - task.created < state.not_exist_for_s:
        return None
    return task


def _not_exist() -> web.Response:
    return task_error(400, "task_not_exist", "task_not_exist")  # New API's answer


async def query(request: web.Request) -> web.Response:
    """GET /v1/video/generations/{task_id}: the configured legacy shape (A, B or C)."""
    if (denied := _denied(request)) is not None:
        return denied
    task = _lookup(request)
    if task is None:
        return _not_exist()
    view, shape = observe(request, task), request.app[STATE].query_shape
    if shape == "B":
        return web.json_response(shape_b(view))
    if shape == "C":
        return web.json_response(shape_c(view, request.app[CONFIG]))
    return web.json_response(shape_a(view))


async def video(request: web.Request) -> web.Response:
    """GET /v1/videos/{task_id}: the OpenAI video object (shape C)."""
    if (denied := _denied(request)) is not None:
        return denied
    task = _lookup(request)
    if task is None:
        return _not_exist()
    return web.json_response(shape_c(observe(request, task), request.app[CONFIG]))


async def _mp4(task: SimTask) -> web.Response:
    data = await asyncio.to_thread(clip, task.duration, task.aspect_ratio, "newapi")
    return web.Response(body=data, content_type="video/mp4")


async def content(request: web.Request) -> web.Response:
    """GET /v1/videos/{task_id}/content: the video through the gateway (auth)."""
    if (denied := _denied(request)) is not None:
        return denied
    task = _lookup(request)
    if task is None:
        return _not_exist()
    if observe(request, task).phase != "succeeded":
        return relay_error(404, "video is not ready", "video_not_ready")  # [inferred]
    return await _mp4(task)


def _cdn_denied(message: str) -> web.Response:
    xml = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"  # [inferred]
    return web.Response(status=403, text=xml, content_type="application/xml")


async def cdn(request: web.Request) -> web.Response:
    """GET /cdn/vidu/{task_id}.mp4?expires=&sig=: a signed, expiring CDN URL [inferred]."""
    task = request.app[STATE].tasks.get(request.match_info["task_id"])
    expires, sig = request.query.get("expires", ""), request.query.get("sig", "")
    if task is None or sig != signature(task.task_id, expires, request.app[CONFIG].api_key):
        return _cdn_denied("Invalid signature")
    if time.time() > float(expires):
        return _cdn_denied("Request has expired")
    return await _mp4(task)


async def models(request: web.Request) -> web.Response:
    """GET /v1/models: the OpenAI list of the models this token may use (Bearer required)."""
    if (denied := _denied(request)) is not None:
        return denied
    data = [{"id": m, "object": "model", "created": 1760000000, "owned_by": "vidu"} for m in MODELS]
    return web.json_response({"object": "list", "data": data, "success": True})


async def invalid_url(request: web.Request) -> web.Response:
    """Any other path: 404 ``Invalid URL (GET /v1/...)`` in the relay shape."""
    return relay_error(404, f"Invalid URL ({request.method} {request.path})", "invalid_url")


def make_app(
    config: SimConfig,
    *,
    query_shape: QueryShape = "A",
    not_exist_for_s: float = 0.0,
    quota_jobs: int | None = None,
) -> web.Application:
    """The gateway simulator (routes and behaviour in the module docstring).

    Args:
        config: API key, job latency, failing prompt text, result URL lifetime.
        query_shape: what ``GET /v1/video/generations/{id}`` answers (shape A, B or C).
        not_exist_for_s: seconds a fresh task answers 400 ``task_not_exist``.
        quota_jobs: how many submits the account can pay for; later ones get 403 (None: no limit).
    """
    app = new_app(config, _fault_body)
    app[STATE] = GatewayState(query_shape, not_exist_for_s, quota_jobs)
    app.router.add_post("/v1/video/generations", submit, name="submit")
    app.router.add_get("/v1/video/generations/{task_id}", query, name="poll")
    app.router.add_get("/v1/videos/{task_id}", video, name="video")
    app.router.add_get("/v1/videos/{task_id}/content", content, name="content")
    app.router.add_get("/v1/models", models, name="models")
    app.router.add_get("/cdn/vidu/{task_id}.mp4", cdn, name="fetch")
    app.router.add_route("*", "/{tail:.*}", invalid_url, name="invalid_url")
    return app
