"""Tasks of the New API gateway simulator (:mod:`pipeline.sim.newapi.app`) and their JSON.

:class:`GatewayState` (kept in the app under :data:`STATE`) holds every accepted
:class:`SimTask`; :func:`observe` tells a task's state now as a :class:`View` (refunding a failure
in the ledger when first seen, signing the result URL with :func:`signature`); :func:`shape_a`,
:func:`shape_b` and :func:`shape_c` render a view as the legacy query's shapes A and B or the
OpenAI ``video`` object (shape C).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from pipeline.sim.common import CONFIG, LEDGER, SimConfig, Timeline, origin

QueryShape = Literal["A", "B", "C"]

#: Vidu err_code of a moderated prompt [I: the code name].
FAIL_CODE = "AuditSubmitIllegal"


@dataclass(slots=True)
class SimTask:
    """One accepted task: what was asked, when, and whether it will fail."""

    task_id: str
    model: str
    duration: int
    aspect_ratio: str
    created: float
    action: str
    fail: bool = False
    refunded: bool = False


@dataclass
class GatewayState:
    """All mutable simulator state (kept in the app, never in module globals).

    Attributes:
        query_shape: what the legacy query route answers ("A", "B" or "C").
        not_exist_for_s: seconds a fresh task still answers 400 ``task_not_exist``.
        quota_jobs: submits the account can pay for (None: unlimited); then 403.
        tasks: every accepted task by id.
    """

    query_shape: QueryShape = "A"
    not_exist_for_s: float = 0.0
    quota_jobs: int | None = None
    tasks: dict[str, SimTask] = field(default_factory=dict)


STATE = web.AppKey("newapi_state", GatewayState)


@dataclass(frozen=True, slots=True)
class View:
    """A task as observed at one moment: its phase, percent done and result URL ("" until done)."""

    task: SimTask
    phase: str  # "submitted", "queued", "running", "succeeded", "failed"
    percent: int
    url: str


def signature(task_id: str, expires: str, key: str) -> str:
    """The CDN signature of a result URL of ``task_id`` expiring at ``expires`` [inferred]."""
    return hashlib.sha256(f"{task_id}:{expires}:{key}".encode()).hexdigest()[:16]


def observe(request: web.Request, task: SimTask) -> View:
    """The task's state now; a failure is refunded in the ledger when first observed."""
    config = request.app[CONFIG]
    timeline = Timeline(task.created, config.latency_s)
    phase, percent = timeline.phase(), int(timeline.progress() * 100)
    if phase == "done":
        if task.fail and not task.refunded:
            task.refunded = True
            request.app[LEDGER].refund(task.task_id)
        phase = "failed" if task.fail else "succeeded"
    elif phase == "queued" and percent < 10:
        phase = "submitted"
    url = ""
    if phase == "succeeded":
        expires = f"{task.created + config.latency_s + config.url_ttl_s:.3f}"
        sig = signature(task.task_id, expires, config.api_key)
        url = f"{origin(request)}/cdn/vidu/{task.task_id}.mp4?expires={expires}&sig={sig}"
    return View(task, phase, percent, url)


_A_STATUS = {
    "submitted": "SUBMITTED",
    "queued": "QUEUED",
    "running": "IN_PROGRESS",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
}
_B_STATUS = {"submitted": "queued", "running": "processing"}
_C_STATUS = {"submitted": "queued", "running": "in_progress", "succeeded": "completed"}


def shape_a(view: View) -> dict[str, Any]:
    """Shape A: New API ``TaskResponse`` wrapper with the raw Vidu JSON inside (shape A)."""
    task, done = view.task, view.phase in ("succeeded", "failed")
    status = "NOT_START" if view.phase == "submitted" and view.percent < 5 else None
    vidu_state = {"running": "processing", "succeeded": "success"}.get(view.phase, view.phase)
    raw = {
        "id": task.task_id,
        "state": "queueing" if view.phase in ("submitted", "queued") else vidu_state,
        "err_code": FAIL_CODE if view.phase == "failed" else "",
        "creations": [{"id": "c1", "url": view.url, "cover_url": ""}] if view.url else [],
    }
    return {
        "code": "success",
        "message": "",
        "data": {
            "task_id": task.task_id,
            "action": task.action,
            "status": status or _A_STATUS[view.phase],
            "progress": f"{100 if done else view.percent}%",
            "fail_reason": FAIL_CODE if view.phase == "failed" else "",
            "result_url": view.url,
            "submit_time": int(task.created),
            "start_time": int(task.created) + 1,
            "finish_time": int(time.time()) if done else 0,
            "platform": "vidu",
            "data": raw,
        },
    }


def shape_b(view: View) -> dict[str, Any]:
    """Shape B: ``{"code":"success","data":{task_id,status,url,format,error...}}`` (shape B)."""
    failed = view.phase == "failed"
    data = {
        "task_id": view.task.task_id,
        "status": _B_STATUS.get(view.phase, view.phase),
        "url": view.url or None,
        "format": "mp4",
        "metadata": None,
        "error": FAIL_CODE if failed else None,
    }
    return {"code": "success", "data": data}


def shape_c(view: View, config: SimConfig) -> dict[str, Any]:
    """Shape C: the OpenAI ``video`` object, URL in ``metadata.url`` (shape C)."""
    task, failed = view.task, view.phase == "failed"
    done = view.phase in ("succeeded", "failed")
    return {
        "id": task.task_id,
        "object": "video",
        "model": task.model,
        "status": _C_STATUS.get(view.phase, view.phase),
        "progress": 100 if done else view.percent,
        "created_at": int(task.created),
        "completed_at": int(task.created + config.latency_s) if done else None,
        "seconds": str(task.duration),
        "metadata": {"url": view.url} if view.url else None,
        "error": {"message": FAIL_CODE, "code": FAIL_CODE} if failed else None,
    }
