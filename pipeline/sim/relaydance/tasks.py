"""Tasks of the RelayDance simulator (:mod:`pipeline.sim.relaydance.app`) and their JSON.

:class:`SimJob` is one accepted task; :func:`render` answers its status in the documented shape
(``doc``, https://relaydance.com/docs/api-reference/get-prediction) or one of the New API
shapes (TaskDto ``task``, OpenAI ``video``) that New-API-based gateways also answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.sim.common import Timeline

QueryShape = Literal["doc", "task", "video"]


@dataclass(slots=True)
class SimJob:
    """One task: its request facts, timing, and whether its end was processed."""

    task_id: str
    model: str
    prompt: str
    seconds: int
    ratio: str
    resolution: str
    timeline: Timeline
    cost_usd: float
    origin: str
    fail: bool
    callback_url: str | None = None
    finalized: bool = False

    @property
    def finished_at(self) -> float:
        """When the task reaches its final state (Unix seconds)."""
        return self.timeline.created + self.timeline.latency_s


def task_status(job: SimJob) -> str:
    """``submitted``, ``running``, then ``succeeded`` or ``failed`` (the documented names)."""
    phase = job.timeline.phase()
    if phase == "done":
        return "failed" if job.fail else "succeeded"
    return "submitted" if phase == "queued" else "running"


_REASON = "The request was rejected by content moderation."  # [inferred] reason text


def render(job: SimJob, shape: QueryShape, signed_url: str) -> dict[str, Any]:
    """The task JSON in ``shape`` (documented, TaskDto or video object).

    ``signed_url`` is included only once the task succeeded.
    """
    status = task_status(job)
    url = signed_url if status == "succeeded" else None
    if shape == "task":
        upper = {"submitted": "SUBMITTED", "running": "IN_PROGRESS", "succeeded": "SUCCESS"}
        data = {
            "task_id": job.task_id,
            "action": "generate",
            "status": upper.get(status, "FAILURE"),
            "progress": f"{int(job.timeline.progress() * 100)}%",
            "fail_reason": _REASON if status == "failed" else "",
            "result_url": url or "",
            "submit_time": int(job.timeline.created),
            "finish_time": int(job.finished_at) if status in ("succeeded", "failed") else 0,
            "data": {},
        }
        return {"code": "success", "message": "", "data": data}
    if shape == "video":
        lower = {"submitted": "queued", "running": "in_progress", "succeeded": "completed"}
        failed = status == "failed"
        return {
            "id": job.task_id,
            "object": "video",
            "model": job.model,
            "status": lower.get(status, "failed"),
            "progress": int(job.timeline.progress() * 100),
            "created_at": int(job.timeline.created),
            "metadata": {"url": url} if url else {},
            "error": {"message": _REASON, "code": "content_policy"} if failed else None,
        }
    body: dict[str, Any] = {
        "task_id": job.task_id,
        "status": status,
        "format": "mp4",
        "metadata": {"ratio": job.ratio, "resolution": job.resolution},
    }
    if url:
        body["url"] = url
    if status == "failed":
        body["error"] = {"message": _REASON}  # [inferred] reason field not documented
    return body
