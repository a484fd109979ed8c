"""RelayDance wire format (relaydance.md §4): request building and response parsing, no I/O.

RelayDance is a New-API-based gateway. Its documented surface (§4.2-§4.5) is small, but what a
client receives in practice also follows New API's other task shapes (§3.3), so the parsers here
accept all of them:

- doc shape [relaydance.md §4.3]: ``{task_id, status, url, format, metadata}``;
- New API ``TaskDto`` wrapper [newapi.md §3.3 A/B]: ``{code, message, data: {task_id, status,
progress:
  "30%", fail_reason, result_url | url, data: {raw upstream}}}``;
- OpenAI video object [newapi.md §3.3 seen in code]: ``{id, object: "video", status, progress:
0-100,
  metadata: {url}, error: {message, code}}``.

Statuses are normalised through :data:`STATUS_SYNONYMS` (case-insensitive; unknown strings mean
RUNNING, docs/providers/README.md §6).

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.models import JobStatus, MediaRef, MediaRole, PollResult, Shot
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.settings import ProviderSettings

NAME = "relaydance"

#: Defaults [relaydance.md §4.1 base URL]; limits are [inferred]: RelayDance publishes no numbers
#: [documented: FAQ].
DEFAULTS = ProviderSettings(
    base_url="https://relaydance.com/v1",
    api_key_env="RELAYDANCE_API_KEY",
    max_in_flight=4,
    requests_per_minute=30,
    polls_per_minute=120,
    # The learned poll schedule (engine.pollsched) decides the waits; 2 s is only its floor,
    # and 120 polls a minute cap the total either way.
    poll_min_s=2.0,
    poll_max_s=30.0,
    poll_deadline_s=3600.0,
)

#: Provider status string (lower-case) -> normalised status (docs/providers/README.md §6 RelayDance
#: +
#: New API columns). ``cancelled`` is not documented for RelayDance; New API forks may send it
#: [inferred].
STATUS_SYNONYMS: Mapping[str, JobStatus] = {
    "submitted": JobStatus.QUEUED,  # [relaydance.md §4.3]
    "queued": JobStatus.QUEUED,  # [newapi.md §3.3 B/seen in code]
    "not_start": JobStatus.QUEUED,  # [newapi.md §3.3 A]
    "pending": JobStatus.QUEUED,  # [inferred]
    "running": JobStatus.RUNNING,  # [relaydance.md §4.3]
    "in_progress": JobStatus.RUNNING,  # [newapi.md §3.3 A/seen in code]
    "processing": JobStatus.RUNNING,  # [newapi.md §3.3 B]
    "succeeded": JobStatus.SUCCEEDED,  # [relaydance.md §4.3]
    "success": JobStatus.SUCCEEDED,  # [newapi.md §3.3 A]
    "completed": JobStatus.SUCCEEDED,  # [newapi.md §3.3 seen in code]
    "failed": JobStatus.FAILED,  # [relaydance.md §4.3]
    "failure": JobStatus.FAILED,  # [newapi.md §3.3 A]
    "cancelled": JobStatus.CANCELLED,  # [inferred]
    "canceled": JobStatus.CANCELLED,  # [inferred]
}


def normalise_status(raw: str) -> JobStatus:
    """Map a provider status string to :class:`JobStatus` (unknown strings -> RUNNING)."""
    return STATUS_SYNONYMS.get(raw.strip().lower(), JobStatus.RUNNING)


# ----- request --------------------------------------------------------------------------------


class UrlObject(TypedDict):
    """``{"url": ...}`` inside a content item."""

    url: str


class ContentItem(TypedDict):
    """One ``metadata.content[]`` item, exactly one ``*_url`` key set [relaydance.md §4.2]."""

    type: Literal["image_url", "video_url", "audio_url"]
    role: str
    image_url: NotRequired[UrlObject]
    video_url: NotRequired[UrlObject]
    audio_url: NotRequired[UrlObject]


class SubmitBody(TypedDict):
    """``POST /v1/video/generations`` body [relaydance.md §4.2]; ``seconds`` is a string."""

    model: str
    prompt: str
    seconds: str
    metadata: dict[str, Any]


#: Manifest role -> (content type, RelayDance role) [relaydance.md §4.2 reference roles; seen in
#: code frame roles].
CONTENT_ROLES: Mapping[MediaRole, tuple[Literal["image_url", "video_url", "audio_url"], str]] = {
    MediaRole.IMAGE: ("image_url", "first_frame"),
    MediaRole.END_IMAGE: ("image_url", "last_frame"),
    MediaRole.REFERENCE_IMAGE: ("image_url", "reference_image"),
    MediaRole.REFERENCE_VIDEO: ("video_url", "reference_video"),
    MediaRole.REFERENCE_AUDIO: ("audio_url", "reference_audio"),
}

#: ``metadata`` keys the adapter fills from shot fields; ``shot.extra`` cannot override them.
CORE_METADATA = frozenset({"ratio", "resolution", "generate_audio", "content", "seed"})

_BAKED_RESOLUTION = re.compile(r"-(480p|720p|1080p)$")


def baked_resolution(model: str) -> str | None:
    """The resolution a model id encodes (``…-720p`` -> ``"720p"``), or None [§4.6.5]."""
    match = _BAKED_RESOLUTION.search(model)
    return match.group(1) if match else None


def takes_audio_flag(model: str) -> bool:
    """Whether ``metadata.generate_audio`` applies: Seedance 2.0 only [relaydance.md §4.2]."""
    return model.startswith("doubao-seedance-2-0")


def content_item(ref: MediaRef) -> ContentItem:
    """The ``metadata.content[]`` item for one prepared media reference."""
    kind, role = CONTENT_ROLES[ref.role]
    item: ContentItem = {"type": kind, "role": role}
    item[kind] = {"url": ref.url}
    return item


def build_submit(shot: Shot, media: Sequence[MediaRef]) -> SubmitBody:
    """The submit request body for ``shot`` [relaydance.md §4.2].

    The prompt is passed through unchanged (it cites reference images as ``@image1``… in
    ``content`` order). Everything vendor-specific, including ``shot.extra`` and its
    ``callback_url``, goes inside ``metadata``, never at the top level (quirk §4.6.1); shot fields
    win over ``extra`` keys of the same name. When the shot names no resolution, the one baked
    into the model id is sent (quirk §4.6.5). ``generate_audio`` is sent only when the shot sets
    ``audio`` (Seedance 2.0 models, https://relaydance.com/docs/api-reference/generate-video).

    Args:
        shot: the resolved shot (``duration`` in whole seconds).
        media: prepared references in ``shot.assets`` order (first frame, last frame, references).

    Returns:
        The JSON body as a dict.
    """
    metadata: dict[str, Any] = {k: v for k, v in shot.extra.items() if k not in CORE_METADATA}
    metadata["ratio"] = shot.aspect_ratio
    resolution = shot.resolution or baked_resolution(shot.model)
    if resolution:
        metadata["resolution"] = resolution
    if shot.audio is not None and takes_audio_flag(shot.model):
        metadata["generate_audio"] = shot.audio  # unset: left out, the provider's default
    if shot.seed is not None:
        metadata["seed"] = shot.seed  # [inferred] merged into the upstream body by New API (§3.2)
    if media:
        metadata["content"] = [content_item(ref) for ref in media]
    return {
        "model": shot.model,
        "prompt": shot.prompt,
        "seconds": str(shot.duration),
        "metadata": metadata,
    }


# ----- responses ------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TaskError(_Lenient):
    """``error`` of a task [newapi.md §3.3 seen in code]: ``{message, code}``."""

    message: str = ""
    code: str | int | None = None
    type: str | None = None


class Task(_Lenient):
    """A task in any of the shapes of the module docstring, after unwrapping ``{code, data}``."""

    task_id: str | None = None
    id: str | None = None
    status: str
    progress: float | str | None = None
    url: str | None = None
    result_url: str | None = None
    video_url: str | None = None
    fail_reason: str | None = None
    message: str | None = None
    error: TaskError | str | None = None
    metadata: dict[str, Any] | None = None
    data: Any = None


class SubmitReply(_Lenient):
    """Submit answer ``{task_id, status: "submitted"}``, maybe with ``id`` [relaydance.md §4.2]."""

    task_id: str | None = None
    id: str | None = None
    status: str | None = None


def _unwrap(payload: Any) -> Any:
    """The task object: ``data`` of a New API ``{code, data}`` wrapper, else the payload."""
    if (
        isinstance(payload, dict)
        and "status" not in payload
        and isinstance(payload.get("data"), dict)
    ):
        return payload["data"]
    return payload


def parse_task(payload: Any) -> Task:
    """Validate a status payload of any known shape.

    Raises:
        MalformedAnswer: not a task object (no ``status``, wrong types).
    """
    try:
        return Task.model_validate(_unwrap(payload))
    except ValidationError as exc:
        raise MalformedAnswer(f"not a RelayDance task: {exc.error_count()} problem(s)") from exc


def parse_submit(payload: Any) -> str:
    """The task id of a submit answer (``task_id``, else New API's ``id``).

    Raises:
        MalformedAnswer: no task id in the answer.
    """
    try:
        reply = SubmitReply.model_validate(_unwrap(payload))
    except ValidationError as exc:
        raise MalformedAnswer("submit answer is not a JSON object with task_id") from exc
    task_id = reply.task_id or reply.id
    if not task_id:
        raise MalformedAnswer("submit answer has no task_id")
    return task_id


def _progress(value: float | str | None) -> float | None:
    """``"30%"`` (TaskDto) or 0-100 (video object) -> 0.0-1.0."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%") or "nan")
        except ValueError:
            return None
    if value != value:  # NaN
        return None
    return min(1.0, max(0.0, float(value) / 100.0))


def _upstream_url(raw: Any) -> str | None:
    """``creations[0].url`` of a raw Vidu-style upstream body [newapi.md §3.3 A]."""
    if isinstance(raw, dict):
        creations = raw.get("creations")
        if isinstance(creations, list) and creations and isinstance(creations[0], dict):
            url = creations[0].get("url")
            return url if isinstance(url, str) and url else None
    return None


def result_url(task: Task) -> str | None:
    """The video URL wherever the shape puts it (quirk §3.5.4), or None."""
    meta_url = (task.metadata or {}).get("url")
    for url in (task.result_url, task.url, task.video_url, meta_url, _upstream_url(task.data)):
        if isinstance(url, str) and url:
            return url
    return None


def failure_reason(task: Task) -> str:
    """Reason text: ``error.message`` -> ``fail_reason`` -> ``message`` [relaydance.md §4.3]."""
    error = task.error.message if isinstance(task.error, TaskError) else task.error
    for text in (error, task.fail_reason, task.message):
        if text:
            return text
    return ""


def parse_status(payload: Any) -> PollResult:
    """One poll answer as a :class:`PollResult`.

    ``refunded`` is True for failed jobs: "failed (not billed)" [relaydance.md §4.3].

    Raises:
        MalformedAnswer: the payload is not a task object.
    """
    task = parse_task(payload)
    status = normalise_status(task.status)
    failed = status == JobStatus.FAILED
    return PollResult(
        status=status,
        raw_status=task.status,
        progress=_progress(task.progress),
        result_url=result_url(task) if status == JobStatus.SUCCEEDED else None,
        message=failure_reason(task) if failed else "",
        refunded=True if failed else None,
    )


@dataclass(frozen=True, slots=True)
class ApiErrorInfo:
    """An error body's content: ``message``, ``type`` and ``code`` (empty when absent)."""

    message: str
    type: str = ""
    code: str = ""


def parse_error(body: bytes) -> ApiErrorInfo:
    """Read an error body, ``{"error": {message, type}}`` or ``{code, message}`` (§4.5).

    Never raises: a body of another shape becomes its (shortened) text.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ApiErrorInfo(body[:200].decode("utf-8", "replace").strip())
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return ApiErrorInfo(
                str(error.get("message") or ""),
                str(error.get("type") or ""),
                str(error.get("code") or ""),
            )
        if isinstance(error, str) and error:
            return ApiErrorInfo(error)
        if "message" in data or "code" in data:
            return ApiErrorInfo(str(data.get("message") or ""), "", str(data.get("code") or ""))
    return ApiErrorInfo(json.dumps(data)[:200])
