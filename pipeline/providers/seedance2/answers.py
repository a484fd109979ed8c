"""seedance2.ink answers: typed envelopes, tasks, errors and their classification (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from pipeline._util.redaction import redact_provider_text as redact
from pipeline.models import JobStatus, PollResult
from pipeline.providers.codec_errors import MalformedAnswer, ProviderRefused

#: Status synonyms, matched case-insensitively. The five documented values [seedance2.md §2.4] plus
#: common spellings [inferred; providers/README.md §6]; anything else is RUNNING (the runner's
#: deadline bounds it).
STATUS_SYNONYMS: Mapping[str, JobStatus] = MappingProxyType(
    {
        "queued": JobStatus.QUEUED,
        "pending": JobStatus.QUEUED,
        "submitted": JobStatus.QUEUED,
        "processing": JobStatus.RUNNING,
        "running": JobStatus.RUNNING,
        "in_progress": JobStatus.RUNNING,
        "succeeded": JobStatus.SUCCEEDED,
        "success": JobStatus.SUCCEEDED,
        "completed": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
        "failure": JobStatus.FAILED,
        "error": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
        "canceled": JobStatus.CANCELLED,
    }
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ApiError(_Wire):
    """The ``error`` object of the envelope: ``{code, message}`` [seedance2.md §2.1, §2.4]."""

    code: str = "unknown"
    message: str = ""

    @property
    def text(self) -> str:
        """``"code: message"``, redacted, for exception messages."""
        return redact(f"{self.code}: {self.message}" if self.message else self.code)


class SubmitResponse(_Wire):
    """A successful submit answer [seedance2.md §2.3]; ``credits_charged`` is known up front."""

    success: StrictBool
    request_id: str = Field(alias="requestId", min_length=1)
    status: str = "queued"
    credits_charged: float | None = Field(default=None, alias="creditsCharged", ge=0)


class Output(_Wire):
    """A task's ``output``: ``{"type": "video", "url": …}``, public, no auth [seedance2.md §2.4]."""

    type: str | None = None
    url: str | None = None


class Task(_Wire):
    """A task as ``GET …/{requestId}`` (and the webhook, inferred) returns it [seedance2.md §2.4].

    Only the fields the adapter uses are typed; ``status`` stays untyped so an odd value is an
    unknown status (RUNNING), not a malformed answer. ``error`` is read by :func:`parse_error`.
    """

    success: StrictBool
    request_id: str | None = Field(default=None, alias="requestId")
    status: Any = None
    output: Output | None = None


class ErrorKind(StrEnum):
    """What an error code means for the caller."""

    REJECTED = "rejected"  #: definite refusal: validation, auth, balance; nothing created
    RATE_LIMITED = "rate_limited"  #: slow down; nothing created
    NOT_FOUND = "not_found"  #: no such task
    UNKNOWN = "unknown"  #: cannot tell: the request may have had an effect


#: Codes that are definite refusals. Only ``unauthorized`` is documented [seedance2.md §2.1]; the
#: others are
#: the usual names of validation/balance errors [inferred; seedance2.md §2.5]. Any ``invalid_*``
#: code counts too.
REJECT_CODES = frozenset(
    {
        "unauthorized",
        "forbidden",
        "invalid_api_key",
        "insufficient_credits",
        "insufficient_balance",
        "payment_required",
        "validation_error",
        "bad_request",
        "model_not_found",
        "unsupported_model",
        "content_policy",
    }
)


# [inferred; seedance2.md §2.5]
RATE_CODES = frozenset({"rate_limited", "rate_limit_exceeded", "too_many_requests"})


NOT_FOUND_CODES = frozenset({"not_found", "task_not_found", "request_not_found"})  # [inferred]


def classify(code: str) -> ErrorKind:
    """Map an envelope error code (case-insensitive) to an :class:`ErrorKind`."""
    norm = code.strip().lower()
    if norm in RATE_CODES:
        return ErrorKind.RATE_LIMITED
    if norm in NOT_FOUND_CODES:
        return ErrorKind.NOT_FOUND
    if norm in REJECT_CODES or norm.startswith("invalid"):
        return ErrorKind.REJECTED
    return ErrorKind.UNKNOWN


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def normalize_status(raw: object) -> JobStatus:
    """The :class:`JobStatus` of a provider status string; unknown or non-strings -> RUNNING."""
    if not isinstance(raw, str):
        return JobStatus.RUNNING
    return STATUS_SYNONYMS.get(raw.strip().lower(), JobStatus.RUNNING)


def refusal_error(refused: ProviderRefused) -> ApiError:
    """The :class:`ApiError` a :class:`ProviderRefused` raised by this module carries."""
    return ApiError(code=refused.code, message=refused.message)


def parse_error(payload: Any) -> ApiError | None:
    """The error of an envelope (``{"success": false, "error": {code, message}}``), or None.

    Tolerates ``error`` given as a bare string. Returns None when ``payload`` carries no error.
    """
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if isinstance(err, dict):
        code, message = err.get("code"), err.get("message")
        return ApiError(
            code=str(code) if code else "unknown", message=str(message) if message else ""
        )
    if isinstance(err, str) and err:
        return ApiError(message=err)
    if payload.get("success") is False:
        return ApiError()
    return None


def check_envelope(payload: Any) -> dict[str, Any]:
    """Check ``success`` before anything else [seedance2.md §2.6 quirk 4].

    Returns:
        The payload, when ``success`` is true.

    Raises:
        ProviderRefused: ``success`` is false; ``code`` and ``message`` of its ``error``
            (``code`` ``"unknown"`` when it has none).
        MalformedAnswer: not a JSON object with a boolean ``success``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("success"), bool):
        raise MalformedAnswer("not a seedance2.ink envelope (no boolean `success`)")
    if payload["success"] is False:
        error = parse_error(payload) or ApiError()
        raise ProviderRefused(error.code, error.message)
    return payload


def parse_submit(payload: Any) -> SubmitResponse:
    """Parse a submit answer [seedance2.md §2.3].

    Raises:
        ProviderRefused: ``success: false``.
        MalformedAnswer: no ``requestId`` or otherwise not the documented shape.
    """
    body = check_envelope(payload)
    try:
        return SubmitResponse.model_validate(body)
    except ValidationError as exc:
        raise MalformedAnswer(
            f"unexpected submit answer: {exc.error_count()} field error(s)"
        ) from exc


def parse_status(payload: Any) -> PollResult:
    """Parse a task (``GET …/{requestId}`` or a webhook body) into a :class:`PollResult`.

    ``succeeded`` carries ``output.url`` as ``result_url``; a ``succeeded`` task without a URL
    is reported as RUNNING (the URL is expected on a later poll [inferred]). ``failed`` carries
    ``error`` as the message; whether it was refunded is not documented, so ``refunded`` is
    None [inferred; seedance2.md §2.3].

    Raises:
        ProviderRefused: ``success: false``.
        MalformedAnswer: not the documented shape.
    """
    body = check_envelope(payload)
    try:
        task = Task.model_validate(body)
    except ValidationError as exc:
        raise MalformedAnswer(
            f"unexpected task answer: {exc.error_count()} field error(s)"
        ) from exc
    raw = task.status if isinstance(task.status, str) else ""
    status = normalize_status(task.status)
    if status is JobStatus.SUCCEEDED:
        url = task.output.url if task.output else None
        if not url:
            return PollResult(JobStatus.RUNNING, raw_status=raw, message="no output.url yet")
        return PollResult(status, raw_status=raw, progress=1.0, result_url=url)
    if status is JobStatus.FAILED:
        err = parse_error(body) or ApiError(message="the task failed without an error object")
        return PollResult(status, raw_status=raw, message=err.text, refunded=None)
    return PollResult(status, raw_status=raw)
