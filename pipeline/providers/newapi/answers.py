"""New API gateway answers: submit, the three task shapes, relay and task errors (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.models import JobStatus, PollResult
from pipeline.providers.codec_errors import MalformedAnswer

#: Status synonyms of every route and version (§3.3, §3.5.2, §6), lower-cased. Anything else
#: (e.g. ``UNKNOWN``) counts as running until the runner's deadline (§6).
STATUSES: Mapping[str, JobStatus] = MappingProxyType(
    {
        "not_start": JobStatus.QUEUED,
        "submitted": JobStatus.QUEUED,
        "queued": JobStatus.QUEUED,
        "queueing": JobStatus.QUEUED,  # Vidu upstream [newapi.md §3.3]
        "created": JobStatus.QUEUED,  # Vidu upstream [newapi.md §3.3]
        "in_progress": JobStatus.RUNNING,
        "processing": JobStatus.RUNNING,
        "success": JobStatus.SUCCEEDED,
        "succeeded": JobStatus.SUCCEEDED,
        "completed": JobStatus.SUCCEEDED,
        "failure": JobStatus.FAILED,
        "failed": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,  # not documented for New API (§6 "—") [inferred]
        "canceled": JobStatus.CANCELLED,  # [inferred]
    }
)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class SubmitResponse(_Lenient):
    """Submit 200 (§3.2): ``{id, task_id, object, model, status, progress, created_at}``.

    ``task_id`` is "compat with old interface" [seen in code: dto/openai_video.go]; either may come
    alone.
    """

    id: str | int | None = None
    task_id: str | int | None = None
    object: str | None = None
    model: str | None = None
    status: str | None = None
    progress: Any = None
    created_at: int | float | None = None


class TaskView(_Lenient):
    """The status-bearing object of any query shape (§3.3 A inner ``data``, B, or C).

    A: ``status`` uppercase, ``progress`` ``"NN%"``, ``fail_reason``, ``result_url``, raw upstream
    ``data`` (Vidu ``{state, err_code, creations:[{url}]}``). B: ``url``, ``error``. C:
    ``progress`` int 0-100, ``metadata.url``, ``error{message, code}``.
    """

    status: str
    task_id: str | int | None = None
    id: str | int | None = None
    progress: Any = None
    fail_reason: str | None = None
    result_url: str | None = None
    url: str | None = None
    video_url: str | None = None
    metadata: dict[str, Any] | None = None
    error: str | dict[str, Any] | None = None
    data: Any = None


class TaskErrorBody(_Lenient):
    """Task error ``{"code": "<string>", "message", "data": null}`` [newapi.md §3.4]."""

    code: str
    message: str | None = None
    data: Any = None


class OpenAIErrorDetail(_Lenient):
    """The inner object of ``{"error": {message, type, param, code}}`` [newapi.md §3.4]."""

    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class OpenAIErrorBody(_Lenient):
    """Relay error envelope (401 token, 404 URL, 501 ``api_not_implemented``) [newapi.md §3.4]."""

    error: OpenAIErrorDetail


@dataclass(frozen=True, slots=True)
class SubmitAnswer:
    """What a submit answer says: ``job_id`` (task_id, else id) plus both raw ids."""

    job_id: str
    id: str | None
    task_id: str | None
    status: str


@dataclass(frozen=True, slots=True)
class ApiError:
    """A parsed error body: ``code`` ("" if none), ``message``, ``kind`` ("task"/"relay"/"")."""

    code: str
    message: str
    kind: str = ""


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def parse_submit(payload: Any) -> SubmitAnswer:
    """Read a 2xx submit answer (§3.2; quirk §3.5.1: ``id`` and/or ``task_id``, same value).

    Raises:
        MalformedAnswer: not an object, or neither ``task_id`` nor ``id`` is present.
    """
    try:
        answer = SubmitResponse.model_validate(payload)
    except ValidationError as exc:
        raise MalformedAnswer(
            f"submit answer is not an object: {exc.error_count()} errors"
        ) from exc
    task_id, job = _text(answer.task_id), _text(answer.id)
    job_id = task_id or job
    if job_id is None:
        raise MalformedAnswer("submit answer has neither task_id nor id")
    return SubmitAnswer(job_id=job_id, id=job, task_id=task_id, status=answer.status or "")


def normalise_status(raw: str) -> JobStatus:
    """Map any route's status string to :class:`JobStatus` (case-insensitive; unknown: RUNNING)."""
    key = raw.strip().lower().replace("-", "_").replace(" ", "_")
    return STATUSES.get(key, JobStatus.RUNNING)


def parse_progress(value: object) -> float | None:
    """Progress as 0.0-1.0 from ``"NN%"`` (TaskDto) or an int 0-100 (``/v1/videos``) (§3.5.3).

    Numbers are read as percent [inferred]; unreadable values give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().rstrip("%").strip()
        if not value:
            return None
    try:
        percent = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, percent / 100.0))


def _task_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedAnswer("status answer is not a JSON object")
    inner = payload.get("data")
    if isinstance(inner, dict) and "status" in inner:
        return inner  # shapes A and B (wrapped)
    if "status" in payload:
        return payload  # shape B unwrapped, shape C
    raise MalformedAnswer("status answer has no status")


def _http_url(value: object) -> str | None:
    text = _text(value)
    return text if text and text.startswith(("https://", "http://")) else None


def _raw_url(raw: Any) -> str | None:
    """URL inside the raw upstream JSON of shape A (Vidu ``creations[0].url``) [newapi.md §3.3]."""
    if not isinstance(raw, dict):
        return None
    creations = raw.get("creations")
    if isinstance(creations, list) and creations and isinstance(creations[0], dict):
        url = _http_url(creations[0].get("url"))
        if url:
            return url
    return _http_url(raw.get("url")) or _http_url(raw.get("video_url"))


def find_result_url(task: TaskView) -> str | None:
    """The video URL wherever this route put it (§3.5.4), first match wins.

    Order: ``result_url``, ``url``, ``video_url``, ``metadata.url``, raw ``data.creations[0].url``
    (then raw ``data.url`` / ``data.video_url``). Only absolute http(s) URLs count.
    """
    meta = task.metadata or {}
    for candidate in (task.result_url, task.url, task.video_url, meta.get("url")):
        url = _http_url(candidate)
        if url:
            return url
    return _raw_url(task.data)


def _failure_message(task: TaskView) -> str:
    if task.fail_reason:
        return task.fail_reason
    if isinstance(task.error, str) and task.error:
        return task.error
    if isinstance(task.error, dict):
        message, code = _text(task.error.get("message")), _text(task.error.get("code"))
        if message or code:
            return f"{message or code} ({code})" if message and code else (message or code or "")
    raw = task.data if isinstance(task.data, dict) else {}
    return _text(raw.get("err_code")) or ""


def parse_status(payload: Any) -> PollResult:
    """One observation from any of the three query shapes (§3.3 A/B/C).

    Returns:
        PollResult with the normalised status, ``raw_status`` as sent, ``progress`` 0.0-1.0,
        ``result_url`` (see :func:`find_result_url`), ``message`` (failure reason:
        ``fail_reason``, ``error``/``error.message``, or Vidu ``err_code``) and ``refunded`` None
        for failures (the gateway's refund is not visible in the answer [inferred]).

    Raises:
        MalformedAnswer: the body has no status (e.g. an error body answered with 200).
    """
    try:
        task = TaskView.model_validate(_task_object(payload))
    except ValidationError as exc:
        raise MalformedAnswer(
            f"status answer has an unexpected shape: {exc.error_count()} errors"
        ) from exc
    status = normalise_status(task.status)
    progress = 1.0 if status == JobStatus.SUCCEEDED else parse_progress(task.progress)
    if status == JobStatus.FAILED:
        return PollResult(
            status,
            raw_status=task.status,
            progress=progress,
            message=_failure_message(task) or "the gateway reported the task failed",
            refunded=None,
        )
    return PollResult(
        status,
        raw_status=task.status,
        progress=progress,
        result_url=find_result_url(task) if status == JobStatus.SUCCEEDED else None,
    )


def parse_error(body: bytes | str | Any) -> ApiError:
    """Read an error body: task error, relay (OpenAI) error, or anything else.

    Args:
        body: raw bytes/str, or already-parsed JSON.

    Returns:
        ``ApiError(code, message, kind)`` with ``kind`` ``"task"`` for ``{"code","message"}``,
        ``"relay"`` for ``{"error":{...}}``, ``""`` when the body is neither (message = text).
    """
    payload = body
    if isinstance(body, bytes | str):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return ApiError(code="", message=text.strip()[:300])
    if isinstance(payload, dict):
        try:
            if isinstance(payload.get("error"), dict):
                detail = OpenAIErrorBody.model_validate(payload).error
                code = _text(detail.code) or ""
                return ApiError(code=code, message=detail.message or code, kind="relay")
            if isinstance(payload.get("code"), str):
                task = TaskErrorBody.model_validate(payload)
                return ApiError(code=task.code, message=task.message or task.code, kind="task")
        except ValidationError:
            pass
        if isinstance(payload.get("message"), str):
            return ApiError(code="", message=payload["message"])
    return ApiError(code="", message=str(payload)[:300])
