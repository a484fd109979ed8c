"""Pure codec of the seedance2.ink Open API (seedance2.md §2): request bodies, typed answers.

No I/O here. The I/O shell (:mod:`pipeline.providers.seedance2.adapter`) sends what
:func:`build_submit`
builds and feeds the JSON it receives to :func:`parse_submit`, :func:`parse_status` and
:func:`parse_error`; these raise :class:`Failure` for a ``success: false`` envelope (the
envelope is checked before anything else, docs/providers/seedance2.md §2.6 quirk 4) and
:class:`Malformed` for anything that is not the documented shape.

Wire shapes (camelCase, docs/providers/seedance2.md §2.1/§2.3/§2.4 [documented])::

    POST /api/open/v1/video/generations
      {"model", "prompt", "mediaUrls"?, "aspectRatio"?, "duration"? (int), "resolution"?,
       "webhookUrl"?, "metadata"?}
      -> {"success": true, "requestId": "req_…", "status": "queued", "creditsCharged": 40}
    GET /api/open/v1/video/generations/{requestId}
      -> {"success": true, "requestId", "status", "model", "prompt", "duration", "aspectRatio",
          "output": {"type": "video", "url": "https://pub-….r2.dev/…mp4"} | null,
          "error": {"code", "message"} | null}
    errors: {"success": false, "error": {"code": "unauthorized", "message": "Invalid API key"}}

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from pipeline.models import JobStatus, MediaRef, MediaRole, ModelCaps, PollResult, Shot
from pipeline.providers.http import redact

NAME = "seedance2"
#: Default base URL; the documented paths live under :data:`API_PREFIX` [seedance2.md §2.1].
DEFAULT_BASE_URL = "https://www.seedance2.ink"
API_PREFIX = "/api/open/v1"
SUBMIT_PATH = "video/generations"
#: ``mediaUrls`` takes 1-5 URLs [seedance2.md §2.3].
MAX_MEDIA_URLS = 5


# ----- capabilities -----------------------------------------------------------------------------

_RATIOS = ("16:9", "9:16", "1:1")  # [seedance2.md §2.3 aspectRatio]
_RESOLUTIONS = ("480p", "720p", "1080p")  # [seedance2.md §2.3 resolution: all three models]


def _caps(durations: tuple[int, ...]) -> ModelCaps:
    return ModelCaps(
        durations=durations,
        aspect_ratios=_RATIOS,
        resolutions=_RESOLUTIONS,
        max_prompt_chars=2000,  # [inferred] length limit not documented (§2.3); a conservative pick
        first_frame=True,  # [seedance2.md §2.3 image-to-video page: 1 image -> first frame]
        end_frame=True,  # [seedance2.md §2.3: 2 images -> first + last frame]
        # mediaUrls holds 1-5 items of any documented type [seedance2.md §2.3]; the total (frames
        # included)
        # is enforced by check() below, since ModelCaps counts each kind on its own.
        max_reference_images=MAX_MEDIA_URLS,
        # [seedance2.md §2.3 video .mp4/.mov/.m4v: motion/shot]
        max_reference_videos=MAX_MEDIA_URLS,
        max_reference_audio=MAX_MEDIA_URLS,  # [seedance2.md §2.3 audio .mp3/.wav: rhythm]
        requires_image=False,  # [seedance2.md §2.2: T2V = same POST without mediaUrls]
        audio=False,  # [inferred] no audio switch is documented
    )


#: Capability table per model id [seedance2.md §2.3 model/duration rows; §2.6 quirk 3].
MODELS: Mapping[str, ModelCaps] = MappingProxyType(
    {
        "seedance-2.0": _caps(tuple(range(4, 16))),  # 4-15 s [seedance2.md §2.3]
        "seedance-2.0-fast": _caps(tuple(range(4, 16))),  # 4-15 s [seedance2.md §2.3]
        "seedance-1.5-pro": _caps((5, 10)),  # 5 or 10 s only [seedance2.md §2.3, §2.6 quirk 3]
    }
)
DEFAULT_MODEL = "seedance-2.0"


def check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    """Offline rules :class:`ModelCaps` cannot express (a ``ShotCheck``, see providers/base.py).

    - first frame + end frame + references together are at most 5 ``mediaUrls`` [seedance2.md §2.3];
    - an end frame needs a first frame: the mode is inferred from the order of the media, so a
      lone end frame would be taken as a first frame [seedance2.md §2.3 image-to-video page];
    - ``data:`` URLs are refused [seedance2.md §2.6 quirk 2].

    Returns:
        ``(field, message)`` pairs; empty when the shot is fine.
    """
    issues: list[tuple[str, str]] = []
    count = len(shot.assets)
    if count > MAX_MEDIA_URLS:
        issues.append(
            (
                "references",
                f"seedance2.ink takes at most {MAX_MEDIA_URLS} mediaUrls (first frame + end "
                f"frame + references); this shot has {count}",
            )
        )
    if shot.end_image is not None and shot.image is None:
        issues.append(
            ("end_image", "seedance2.ink needs a first frame (`image`) before an end frame")
        )
    for asset in shot.assets:
        if asset.url is not None and asset.url.lower().startswith("data:"):
            issues.append(("references", "seedance2.ink refuses data: URLs; use https URLs"))
            break
    return issues


def media_url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why ``url`` cannot go into ``mediaUrls`` (None: it can).

    Only public https URLs are accepted and ``data:`` URLs are refused [seedance2.md §2.3, §2.6
    quirk 2]; ``allow_http`` admits plain http (the loopback simulators in ``--simulate`` mode).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data":
        return "seedance2.ink takes no data: URLs in mediaUrls (seedance2.md §2.6); use https"
    if parts.hostname and (scheme == "https" or (scheme == "http" and allow_http)):
        return None
    return f"seedance2.ink takes only public https URLs in mediaUrls (§2.3): {redact(url)}"


# ----- requests ---------------------------------------------------------------------------------

_ROLE_RANK = {MediaRole.IMAGE: 0, MediaRole.END_IMAGE: 1}


def api_base(base_url: str) -> str:
    """The URL the documented paths are appended to: ``base_url`` + ``/api/open/v1``.

    A ``base_url`` that already ends with ``/api/open/v1`` is used as is.
    """
    base = base_url.rstrip("/")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def task_path(request_id: str) -> str:
    """Path of a task's status resource (``requestId`` percent-encoded) [seedance2.md §2.2]."""
    return f"{SUBMIT_PATH}/{quote(request_id, safe='')}"


def cancel_path(request_id: str) -> str:
    """Path of a task's cancel action [seedance2.md §2.2]."""
    return f"{task_path(request_id)}/cancel"


def order_media(media: Sequence[MediaRef]) -> list[MediaRef]:
    """First frame, then end frame, then references in their given order [seedance2.md §2.3]."""
    return sorted(media, key=lambda ref: _ROLE_RANK.get(ref.role, 2))


def build_submit(
    shot: Shot, media: Sequence[MediaRef], *, key: str | None = None
) -> dict[str, Any]:
    """The JSON body of ``POST /api/open/v1/video/generations`` [seedance2.md §2.3].

    ``duration`` is an integer (§2.6 quirk 1); ``mediaUrls`` is present only with media (T2V vs
    I2V is decided by its presence, quirk 2); ``key`` goes into ``metadata.client_ref`` (metadata
    is stored and echoed [documented]). ``shot.extra`` is merged last and verbatim (e.g.
    ``webhookUrl``);
    a ``metadata`` mapping in it is merged with the client reference. ``shot.seed`` and
    ``shot.audio`` have no documented field and are not sent.

    Returns:
        A JSON-serialisable dict (camelCase keys).
    """
    body: dict[str, Any] = {
        "model": shot.model,
        "prompt": shot.prompt,
        "aspectRatio": shot.aspect_ratio,
        "duration": int(shot.duration),
    }
    if shot.resolution:
        body["resolution"] = shot.resolution
    urls = [ref.url for ref in order_media(media)]
    if urls:
        body["mediaUrls"] = urls
    extra = dict(shot.extra)
    metadata: dict[str, Any] = {}
    extra_meta = extra.pop("metadata", None)
    if isinstance(extra_meta, Mapping):
        metadata.update(extra_meta)
    if key:
        metadata["client_ref"] = key
    body.update(extra)
    if metadata:
        body["metadata"] = metadata
    return body


# ----- responses --------------------------------------------------------------------------------


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


class Failure(Exception):
    """The envelope said ``success: false``; ``error`` holds its code and message."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.text)
        self.error = error


class Malformed(ValueError):
    """The payload is not the documented shape (not JSON, no ``success``, missing fields)."""


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


#: Status synonyms, matched case-insensitively. The five documented values [seedance2.md §2.4] plus
#: common spellings [inferred; README.md §6]; anything else is RUNNING (the runner's deadline
#: bounds it).
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
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def normalize_status(raw: object) -> JobStatus:
    """The :class:`JobStatus` of a provider status string; unknown or non-strings -> RUNNING."""
    if not isinstance(raw, str):
        return JobStatus.RUNNING
    return STATUS_SYNONYMS.get(raw.strip().lower(), JobStatus.RUNNING)


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
        Failure: ``success`` is false.
        Malformed: not a JSON object with a boolean ``success``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("success"), bool):
        raise Malformed("not a seedance2.ink envelope (no boolean `success`)")
    if payload["success"] is False:
        raise Failure(parse_error(payload) or ApiError())
    return payload


def parse_submit(payload: Any) -> SubmitResponse:
    """Parse a submit answer [seedance2.md §2.3].

    Raises:
        Failure: ``success: false``.
        Malformed: no ``requestId`` or otherwise not the documented shape.
    """
    body = check_envelope(payload)
    try:
        return SubmitResponse.model_validate(body)
    except ValidationError as exc:
        raise Malformed(f"unexpected submit answer: {exc.error_count()} field error(s)") from exc


def parse_status(payload: Any) -> PollResult:
    """Parse a task (``GET …/{requestId}`` or a webhook body) into a :class:`PollResult`.

    ``succeeded`` carries ``output.url`` as ``result_url``; a ``succeeded`` task without a URL
    is reported as RUNNING (the URL is expected on a later poll [inferred]). ``failed`` carries
    ``error`` as the message; whether it was refunded is not documented, so ``refunded`` is
    None [inferred; seedance2.md §2.3].

    Raises:
        Failure: ``success: false``.
        Malformed: not the documented shape.
    """
    body = check_envelope(payload)
    try:
        task = Task.model_validate(body)
    except ValidationError as exc:
        raise Malformed(f"unexpected task answer: {exc.error_count()} field error(s)") from exc
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


#: Credits per second of video per model: seedance-2.0's 8/s is the documented price (40 credits
#: for text-to-video 5 s 720p, 64 with media) [seedance2.md §2.3]; the other two rates are
#: [inferred].
CREDITS_PER_SECOND: Mapping[str, float] = {
    "seedance-2.0": 8.0,
    "seedance-2.0-fast": 5.0,
    "seedance-1.5-pro": 6.0,
}
#: Price factor per resolution [inferred] and with media (image-to-video: 64 / 40 = 1.6)
#: [seedance2.md §2.3].
RESOLUTION_FACTOR: Mapping[str, float] = {"480p": 0.6, "720p": 1.0, "1080p": 1.5}
MEDIA_FACTOR = 1.6


def credits_for(model: str, duration: int, resolution: str, with_media: bool) -> int:
    """Credits a task costs, e.g. 40 for seedance-2.0 text-to-video 5 s 720p [seedance2.md §2.3].

    Raises:
        KeyError: unknown model or resolution.
    """
    amount = CREDITS_PER_SECOND[model] * duration * RESOLUTION_FACTOR[resolution]
    return math.ceil(amount * (MEDIA_FACTOR if with_media else 1.0) - 1e-9)


def estimate_credits(shot: Shot) -> float | None:
    """The credits ``shot`` will be charged at submit (None for a model without a price)."""
    try:
        return float(
            credits_for(shot.model, shot.duration, shot.resolution or "720p", bool(shot.assets))
        )
    except KeyError:
        return None
