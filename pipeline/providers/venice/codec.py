"""Pure codec of the Venice AI video API (docs/providers/venice.md §1). No I/O here.

- :data:`MODELS` / :data:`VENICE_MODELS`: the capability table (re-exported from
  :mod:`pipeline.providers.venice.models`), shared by the adapter's ``SPEC`` and the simulator
  (``pipeline.sim.venice.app``);
- :func:`build_submit` / :func:`build_quote` / :func:`with_consent`: request bodies (§1.3-§1.5);
- :func:`parse_queue`, :func:`parse_quote`, :func:`parse_status`: 200 answers (§1.4, §1.3, §1.6);
- :func:`parse_error`: every error envelope of §1.10 (StandardError, DetailedError with dict or
  string ``details``, 422 provider content policy in nested and flat form, 409 needs_consent,
  413, 402 in its three variants);
- :func:`caps_from_constraints`: a ``GET /models?type=video`` entry as :class:`ModelCaps` (§1.9).

Everything is tested on recorded bodies in ``tests/data/venice/``.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.models import JobStatus, MediaRef, MediaRole, ModelCaps, PollResult, Shot
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.venice.models import DEFAULT_PROMPT_LIMIT as DEFAULT_PROMPT_LIMIT
from pipeline.providers.venice.models import MODELS as MODELS
from pipeline.providers.venice.models import PRIVATE_MODELS as PRIVATE_MODELS
from pipeline.providers.venice.models import VENICE_MODELS as VENICE_MODELS
from pipeline.providers.venice.models import VeniceModel as VeniceModel

NAME = "venice"
#: Base URL [venice.md §1.1].
DEFAULT_BASE_URL = "https://api.venice.ai/api/v1"
#: A JSON body above 35 MB is refused with 413 [venice.md §1.1]; MB read as MiB [inferred].
MAX_BODY_BYTES = 35 * 1024 * 1024
#: Largest total of a request's data URLs: the body cap minus room for the prompt (<= 20000
#: characters, escaped) and the other fields [inferred].
MAX_INLINE_BYTES = MAX_BODY_BYTES - 256 * 1024
#: The consent flow name a shot opts into with ``consent: seedance`` (§1.5).
SEEDANCE_CONSENT = "seedance"
#: The three attestations, exactly; anything missing, false or extra is a 400 [venice.md §1.5].
CONSENT_FIELDS = (
    "confirmed_terms_and_privacy",
    "confirmed_legal_right",
    "confirmed_screening_acknowledged",
)


#: Status synonyms, lower-cased: the spec's PROCESSING/COMPLETED [venice.md §1.6], the Seedance
#: guide's
#: queued/running/failed and the upscaling guide's completed [venice.md §1.6 doc inconsistencies],
#: plus
#: the cross-provider words of §6 [inferred]. Anything else counts as running (§6).
STATUSES: Mapping[str, JobStatus] = MappingProxyType(
    {
        "queued": JobStatus.QUEUED,
        "pending": JobStatus.QUEUED,
        "in_queue": JobStatus.QUEUED,
        "processing": JobStatus.RUNNING,
        "running": JobStatus.RUNNING,
        "in_progress": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "complete": JobStatus.SUCCEEDED,
        "succeeded": JobStatus.SUCCEEDED,
        "success": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
        "failure": JobStatus.FAILED,
        "error": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
        "canceled": JobStatus.CANCELLED,
    }
)

_SINGLE_FIELDS = {MediaRole.IMAGE: "image_url", MediaRole.END_IMAGE: "end_image_url"}
_LIST_FIELDS = {
    MediaRole.REFERENCE_IMAGE: "reference_image_urls",
    MediaRole.REFERENCE_VIDEO: "reference_video_urls",
    MediaRole.REFERENCE_AUDIO: "reference_audio_urls",
}


def normalise_status(raw: str) -> JobStatus:
    """Map a Venice status string (any case) to :class:`JobStatus`; unknown -> RUNNING (§6)."""
    return STATUSES.get(raw.strip().lower(), JobStatus.RUNNING)


def duration_field(seconds: int) -> str:
    """Venice's duration enum: a string with an ``s`` suffix, ``"5s"`` [venice.md §1.4, §1.12.5]."""
    return f"{seconds}s"


def _params(shot: Shot) -> dict[str, Any]:
    model = VENICE_MODELS.get(shot.model)
    body: dict[str, Any] = {"model": shot.model, "duration": duration_field(shot.duration)}
    ratios = model.caps.aspect_ratios if model else (shot.aspect_ratio,)
    if shot.aspect_ratio and ratios:  # omitted where the model takes none [venice.md §1.4, §1.9]
        body["aspect_ratio"] = shot.aspect_ratio
    resolutions = model.caps.resolutions if model else (shot.resolution,)
    if shot.resolution and resolutions:
        body["resolution"] = shot.resolution
    if shot.audio is not None and (model is None or model.audio_configurable):
        body["audio"] = shot.audio  # unset: left out, Venice's default (true) applies
    return body


def build_submit(shot: Shot, media: Sequence[MediaRef]) -> dict[str, Any]:
    """The ``POST /video/queue`` body for ``shot`` [venice.md §1.4].

    ``duration`` is ``"<n>s"``; ``aspect_ratio`` / ``resolution`` are left out for models whose
    caps have none; ``audio`` is sent only when the shot sets it, and only to audio-configurable
    (or unknown) models: unset, Venice's default (true) applies
    (https://docs.venice.ai/api-reference/endpoint/video/queue). Media go to
    ``image_url`` / ``end_image_url`` (the first of each role) and the ``reference_*_urls``
    arrays by :class:`MediaRole`. ``shot.extra`` (e.g. ``negative_prompt``) is merged last,
    verbatim. ``shot.seed`` is not sent: the queue schema has no seed field [venice.md §1.4].

    Returns:
        The JSON body as a dict (not yet checked against :data:`MAX_BODY_BYTES`).
    """
    body = _params(shot)
    body["prompt"] = shot.prompt
    for ref in media:
        if ref.role in _SINGLE_FIELDS:
            body.setdefault(_SINGLE_FIELDS[ref.role], ref.url)
        else:
            body.setdefault(_LIST_FIELDS[ref.role], []).append(ref.url)
    body.update(shot.extra)
    return body


def with_consent(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` plus ``consents.seedance`` with the three ``true`` fields [venice.md §1.5]."""
    return {**body, "consents": {SEEDANCE_CONSENT: dict.fromkeys(CONSENT_FIELDS, True)}}


def build_quote(shot: Shot) -> dict[str, Any]:
    """The ``POST /video/quote`` body: pricing inputs only [venice.md §1.3].

    Quote accepts ``aspect_ratio`` even for models that reject it on queue [venice.md §1.3], so it
    is sent whenever the shot has one.
    """
    body = _params(shot)
    if shot.aspect_ratio:
        body["aspect_ratio"] = shot.aspect_ratio
    return body


def body_size(body: Mapping[str, Any]) -> int:
    """Bytes of ``body`` as aiohttp sends it (``json.dumps`` defaults)."""
    return len(json.dumps(body).encode())


# ----- answers -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class QueueAnswer(_Model):
    """``POST /video/queue`` 200 body [venice.md §1.4]: ``download_url`` only for private models."""

    model: str
    queue_id: str
    download_url: str | None = None


class StatusAnswer(_Model):
    """``POST /video/retrieve`` JSON body [venice.md §1.6]; times in milliseconds.

    ``url`` appears only in the upscaling guide's lowercase ``completed`` shape [venice.md §1.6].
    """

    status: str
    average_execution_time: float | None = None
    execution_duration: float | None = None
    url: str | None = None
    error: Any = None


def parse_queue(payload: Any) -> QueueAnswer:
    """Read a queue 200 body.

    Raises:
        MalformedAnswer: the body is not the documented shape (the caller treats it as
            ambiguous).
    """
    try:
        answer = QueueAnswer.model_validate(payload)
    except ValidationError as exc:
        raise MalformedAnswer(f"unexpected queue answer: {exc.error_count()} problem(s)") from None
    if not answer.queue_id:
        raise MalformedAnswer("unexpected queue answer: empty queue_id")
    return answer


def parse_quote(payload: Any) -> float:
    """The USD price of a ``{"quote": 0.35}`` body [venice.md §1.3].

    Raises:
        MalformedAnswer: no numeric ``quote`` field.
    """
    value = payload.get("quote") if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise MalformedAnswer("unexpected quote answer: no non-negative number in 'quote'")
    return float(value)


def parse_status(payload: Any, *, download_url: str | None = None) -> PollResult:
    """A JSON retrieve body as :class:`PollResult` [venice.md §1.6].

    ``eta_s`` is ``average_execution_time - execution_duration`` in seconds (the average is a
    P80 estimate in ms) and ``progress`` their ratio. ``COMPLETED`` (private models) succeeds
    with ``result_url = download_url`` (the one stored from the queue answer) or the body's
    ``url`` (upscaling guide). A ``failed`` status (Seedance guide) carries the body's error.

    Raises:
        MalformedAnswer: the body has no string ``status``.
    """
    try:
        answer = StatusAnswer.model_validate(payload)
    except ValidationError:
        raise MalformedAnswer("unexpected retrieve answer: no 'status'") from None
    status = normalise_status(answer.status)
    avg, ran = answer.average_execution_time, answer.execution_duration
    eta = progress = None
    if avg is not None and ran is not None:
        eta = max(0.0, avg - ran) / 1000.0
        progress = min(1.0, ran / avg) if avg > 0 else None
    if status is JobStatus.SUCCEEDED:
        return PollResult(
            status, answer.status, progress=1.0, eta_s=0.0, result_url=answer.url or download_url
        )
    message = parse_error(payload).message if status is JobStatus.FAILED else ""
    return PollResult(status, answer.status, progress=progress, eta_s=eta, message=message)


# ----- errors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VeniceError:
    """An error body of any §1.10 shape, flattened.

    Attributes:
        message: the ``error`` text (``error.message`` when nested), plus ``details``.
        code: ``code`` / ``error.code`` / ``error.type`` (``needs_consent``,
            ``PAYLOAD_TOO_LARGE``, ``PAYMENT_REQUIRED``, ``provider_content_policy``...).
        credits_refunded: 422 on retrieve: whether the charge was refunded [venice.md §1.6].
        recommended_model: 422 on retrieve: the model Venice suggests instead [venice.md §1.6].
        policy_text / consent_version / face_media_roles / docs_url: 409 needs_consent [venice.md
        §1.5]. suggested_prompt: 422 ContentViolationError [venice.md §1.10].
    """

    message: str
    code: str | None = None
    credits_refunded: bool | None = None
    recommended_model: str | None = None
    policy_text: str | None = None
    consent_version: str | None = None
    face_media_roles: tuple[str, ...] = ()
    docs_url: str | None = None
    suggested_prompt: str | None = None

    @property
    def needs_consent(self) -> bool:
        """True for the 409 Seedance face-consent answer [venice.md §1.5]."""
        return self.code == "needs_consent"


def _details(value: Any, prefix: str = "") -> list[str]:
    """Flatten DetailedError ``details`` (zod-style dict, or a plain string) [venice.md §1.10]."""
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, dict):
        return []
    out = [f"{prefix}{m}" if prefix else str(m) for m in value.get("_errors", []) or []]
    for key, sub in value.items():
        if key != "_errors":
            out.extend(_details(sub, f"{prefix}{key}: " if not prefix else f"{prefix}{key}."))
    return out


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error(payload: Any) -> VeniceError:
    """Flatten any Venice error body (already JSON-decoded; a non-dict becomes its text)."""
    if not isinstance(payload, dict):
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        return VeniceError(message=str(text or "").strip()[:300] or "no error body")
    inner = payload.get("error")
    nested = inner if isinstance(inner, dict) else {}
    message = str(nested.get("message") or inner or payload.get("message") or "unknown error")
    extra = _details(payload.get("details")) or [
        str(i["message"])
        for i in payload.get("issues") or []
        if isinstance(i, dict) and "message" in i
    ]
    if extra:
        message = f"{message} ({'; '.join(extra)})"
    refunded = nested.get("credits_refunded", payload.get("credits_refunded"))
    raw_consent = payload.get("consent")
    consent: dict[str, Any] = raw_consent if isinstance(raw_consent, dict) else {}
    roles = payload.get("face_media_roles") or []
    return VeniceError(
        message=message,
        code=_opt_str(nested.get("code"))
        or _opt_str(payload.get("code"))
        or _opt_str(nested.get("type")),
        credits_refunded=refunded if isinstance(refunded, bool) else None,
        recommended_model=_opt_str(
            nested.get("recommended_model") or payload.get("recommended_model")
        ),
        policy_text=_opt_str(consent.get("policy_text")),
        consent_version=_opt_str(consent.get("consent_version")),
        face_media_roles=tuple(str(r) for r in roles if isinstance(r, str)),
        docs_url=_opt_str(payload.get("docs_url")),
        suggested_prompt=_opt_str(payload.get("suggested_prompt")),
    )


# ----- model discovery ---------------------------------------------------------------------


def _seconds(values: Sequence[Any]) -> tuple[int, ...]:
    out = []
    for value in values:
        text = str(value).strip().lower()
        if text.endswith("s") and text[:-1].isdigit():
            out.append(int(text[:-1]))
    return tuple(out)


def caps_from_constraints(entry: Mapping[str, Any]) -> ModelCaps:
    """A ``GET /models?type=video`` entry as :class:`ModelCaps` [venice.md §1.9].

    Only ``"<n>s"`` durations are kept (``"auto"``, ``"-1"``, ``"1 gen"`` have no length); the
    prompt cap defaults to 2500 [venice.md §1.9]; ``model_type`` ``image-to-video`` means a first
    frame
    is required unless the id is a reference-to-video one [venice.md §1.9]. Reference counts are
    not in
    the constraints and stay 0. Reference image limits (``reference_image_min_short_side_pixels``,
    ``reference_image_{min,max}_aspect_ratio``) are read when present [venice.md §1.9].
    """
    spec = entry.get("model_spec") or {}
    cons = spec.get("constraints") or {}
    ident = str(entry.get("id", ""))
    i2v = cons.get("model_type") == "image-to-video" and "reference-to-video" not in ident
    short = cons.get("reference_image_min_short_side_pixels")
    low, high = (
        cons.get("reference_image_min_aspect_ratio"),
        cons.get("reference_image_max_aspect_ratio"),
    )
    return ModelCaps(
        min_image_short_side=int(short) if short is not None else None,
        image_aspect_range=(float(low), float(high)) if low is not None and high else None,
        durations=_seconds(cons.get("durations") or []),
        aspect_ratios=tuple(str(r) for r in cons.get("aspect_ratios") or []),
        resolutions=tuple(str(r) for r in cons.get("resolutions") or []),
        max_prompt_chars=int(cons.get("prompt_character_limit") or DEFAULT_PROMPT_LIMIT),
        first_frame=i2v,
        requires_image=i2v,
        audio=bool(cons.get("audio")),
    )
