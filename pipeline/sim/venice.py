"""Simulator of the Venice AI video API (providers.md §1), served under :data:`BASE_PATH`.

Routes (fault-injection names in brackets)::

    POST /api/v1/video/quote     [quote]     {"quote": usd}; price = price_per_second x seconds x
                                             resolution factor (the queue charge equals it)
    POST /api/v1/video/queue     [submit]    {model, queue_id} (+ download_url for private models)
    POST /api/v1/video/retrieve  [poll]      JSON PROCESSING while running; video/mp4 bytes when
                                             done (normal models); JSON COMPLETED (private ones)
    POST /api/v1/video/complete  [complete]  {"success": true}; a later retrieve answers 404
    GET  /api/v1/models?type=video [models]  the §1.9 list built from the adapter's model table
    GET  /v1/share/read/{token}  [fetch]     private download link: no auth, 410 after
                                             ``download_max_gets`` GETs, after DELETE or expiry
    DELETE /v1/share/read/{token} [delete]   revoke the link: 204

Normal models deliver their bytes on the *retrieve* route, so a fault on their download is
injected on ``poll``; ``fetch`` is the private download link.

Behaviour taken from the documentation: Bearer auth (no credentials -> 402 x402 body with a
``PAYMENT-REQUIRED`` header, wrong key -> 401), JSON-only bodies (400), 35 MB body cap (413),
per-model validation with DetailedError bodies, the 409 Seedance face-consent flow (media whose
URL or decoded bytes contain ``FACE``; attested bytes are not asked again), prompts containing
``SimConfig.fail_prompts`` failing on retrieve with 422 ``provider_content_policy`` and a
refund, per-key request limits with ``x-ratelimit-*-requests`` headers, and the error budget
(more than ``error_budget`` failed 4xx per key and model in 30 s -> every request 429 for 30 s).
Choices where the docs are silent are marked [I].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

from pipeline.providers.venice_codec import (
    CONSENT_FIELDS,
    MAX_BODY_BYTES,
    SEEDANCE_CONSENT,
    VENICE_MODELS,
    VeniceModel,
)
from pipeline.sim.common import (
    CONFIG,
    LEDGER,
    Handler,
    SimConfig,
    Timeline,
    bearer_token,
    clip,
    fetch_media,
    new_app,
    origin,
)

#: What the adapter's ``base_url`` ends with.
BASE_PATH = "/api/v1"
#: Path prefix of private download links (as ``private-share.venice.ai/v1/share/read/...``).
SHARE_PATH = "/v1/share/read"

_MEDIA_NOT_FOUND = "Media could not be found. Request may be invalid, expired, or deleted."
_RES_FACTOR = {"480p": 1.0, "720p": 2.0, "1080p": 4.0, "4k": 8.0}  # price factors [I]
# fmt: off
_QUEUE_FIELDS = frozenset((  # [D §1.4]
    "model", "prompt", "negative_prompt", "duration", "aspect_ratio", "resolution",
    "upscale_factor", "audio", "image_url", "end_image_url", "audio_url", "video_url",
    "reference_image_urls", "reference_video_urls", "reference_audio_urls",
    "reference_document_urls", "elements", "scene_image_urls", "keyframes",
    "omni_reference_task_type", "consents", "bitrate_mode", "camera_trajectory",
))
# fmt: on
_REF_FIELDS = {
    "reference_image_urls": "max_reference_images",
    "reference_video_urls": "max_reference_videos",
    "reference_audio_urls": "max_reference_audio",
}
#: Fields checked for faces, with their ``face_media_roles`` names [D §1.5].
_FACE_FIELDS = {
    "image_url": "image",
    "end_image_url": "end_image",
    "reference_image_urls": "reference_image",
    "reference_video_urls": "reference_video",
}
#: Route name -> rate-limit bucket (None: auth and budget only).
_GUARDED: dict[str, str | None] = {
    "submit": "queue",
    "poll": "retrieve",
    "quote": None,
    "complete": None,
}


@dataclass(frozen=True, slots=True)
class VeniceSimOptions:
    """Venice-specific simulator settings (keyword options of :func:`make_app`).

    Attributes:
        queue_per_minute / retrieve_per_minute: per-key request limits [D §1.11: 40 / 120].
        error_budget: failed 4xx per key and model tolerated in ``error_window_s`` [D §1.11: > 20].
        error_window_s / lockout_s: the budget window and the lockout length [D §1.11: 30 s].
        download_max_gets: GETs a private link serves before answering 410 [I: 3].
        price_per_second: USD per second at factor 1.0 (480p) [I].
        max_body_bytes: JSON body cap [D §1.1: 35 MB].
        inference_fail_prompts: a prompt containing it fails on retrieve with 500 [I].
        guide_statuses: answer lowercase ``queued``/``running``/``completed`` as the guides
            do instead of the spec's ``PROCESSING``/``COMPLETED`` [D §1.6 inconsistency].
    """

    queue_per_minute: int = 40
    retrieve_per_minute: int = 120
    error_budget: int = 20
    error_window_s: float = 30.0
    lockout_s: float = 30.0
    download_max_gets: int = 3
    price_per_second: float = 0.05
    max_body_bytes: int = MAX_BODY_BYTES
    inference_fail_prompts: str = "INFERENCE_FAIL"
    guide_statuses: bool = False


@dataclass(slots=True)
class SimJob:
    """One queued job (times in Unix seconds, ``cost_usd`` in USD)."""

    queue_id: str
    model: str
    prompt: str
    seconds: int
    ratio: str
    created: float
    cost_usd: float
    private: bool
    deleted: bool = False


@dataclass(slots=True)
class Link:
    """A private download link: its job, GETs served, whether it was revoked."""

    queue_id: str
    gets: int = 0
    revoked: bool = False


@dataclass
class VeniceState:
    """Everything the simulator remembers (one per app, under :data:`STATE`)."""

    options: VeniceSimOptions
    jobs: dict[str, SimJob] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    attested: set[str] = field(default_factory=set)
    requests: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    locked_until: dict[tuple[str, str], float] = field(default_factory=dict)
    consent_requests: int = 0

    def price(self, model: str, seconds: int, resolution: str | None) -> float:
        """Deterministic USD price of a job (the quote and the queue charge) [I]."""
        factor = _RES_FACTOR.get(resolution or "", 1.0)
        return round(self.options.price_per_second * seconds * factor, 4)

    def limit(self, bucket: str) -> int:
        """Requests per minute of ``bucket`` (``queue`` or ``retrieve``)."""
        opts = self.options
        return opts.queue_per_minute if bucket == "queue" else opts.retrieve_per_minute

    def admit(self, token: str, bucket: str, now: float) -> bool:
        """Count one request against the per-minute limit; False when it is exhausted."""
        window = self.requests.setdefault((token, bucket), deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.limit(bucket):
            return False
        window.append(now)
        return True

    def limit_headers(self, token: str, bucket: str, now: float) -> dict[str, str]:
        """``x-ratelimit-*-requests`` headers; the reset is Unix milliseconds [D §1.11]."""
        window = self.requests.get((token, bucket)) or deque()
        reset = (window[0] if window else now) + 60.0
        return {
            "x-ratelimit-limit-requests": str(self.limit(bucket)),
            "x-ratelimit-remaining-requests": str(max(0, self.limit(bucket) - len(window))),
            "x-ratelimit-reset-requests": str(int(reset * 1000)),
        }

    def record(self, token: str, model: str, status: int, now: float) -> None:
        """Count a failed 4xx (not 429) against the error budget; lock out past it."""
        if not token or not 400 <= status < 500 or status == 429:
            return
        window = self.failures.setdefault((token, model), deque())
        window.append(now)
        while window and window[0] <= now - self.options.error_window_s:
            window.popleft()
        if len(window) > self.options.error_budget:
            self.locked_until[(token, model)] = now + self.options.lockout_s


STATE = web.AppKey("venice_state", VeniceState)
#: The parsed JSON body of a guarded request (set by the guard middleware).
BODY: web.RequestKey[dict[str, Any]] = web.RequestKey("venice_body", dict)


# ----- response helpers --------------------------------------------------------------------


def _error_body(status: int, message: str) -> dict[str, Any]:
    """StandardError ``{"error": "..."}`` [D §1.10] (also used for injected faults)."""
    return {"error": message}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(_error_body(status, message), status=status, headers=headers)


def _invalid(name: str, message: str) -> web.Response:
    """400 DetailedError with zod-style ``details`` and ``issues`` [D §1.10]."""
    body = {
        "error": "Invalid request parameters",
        "details": {"_errors": [], name: {"_errors": [message]}},
        "issues": [{"path": [name], "message": message}],
    }
    return web.json_response(body, status=400)


def _x402(request: web.Request) -> web.Response:
    """402 for a request without any credentials: the x402 discovery body [D §1.1, §1.10]."""
    body = {
        "x402Version": 2,
        "error": "Authentication required",
        "resource": {"url": str(request.rel_url.path), "mimeType": "application/json"},
        "accepts": [{"scheme": "exact", "network": "base", "asset": "USDC"}],
        "extensions": {},
        "authOptions": {"apiKey": "Authorization: Bearer <key>", "x402": "SIGN-IN-WITH-X"},
    }
    header = base64.b64encode(json.dumps(body).encode()).decode()
    return web.json_response(body, status=402, headers={"PAYMENT-REQUIRED": header})


# ----- guard: auth, body, error budget, rate limits -----------------------------------------


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


async def _json_body(request: web.Request, state: VeniceState) -> web.Response | dict[str, Any]:
    if request.content_type != "application/json":
        return _error(400, "'Content-Type' must be 'application/json'")
    raw = await _read_body(request, state.options.max_body_bytes)
    if raw is None:
        body = {"code": "PAYLOAD_TOO_LARGE", "error": "Request payload is too large (max 35 MB)"}
        return web.json_response(body, status=413)
    parsed = await anyio.to_thread.run_sync(_loads, raw) if len(raw) > 1 << 20 else _loads(raw)
    if not isinstance(parsed, dict):
        return _error(400, "Invalid JSON request")
    return parsed


async def _precheck(
    request: web.Request, state: VeniceState, token: str, bucket: str | None, now: float
) -> tuple[web.Response | None, str]:
    if not token:
        return _x402(request), ""
    if token != request.app[CONFIG].api_key:
        return _error(401, "Authentication failed"), ""
    body = await _json_body(request, state)
    if isinstance(body, web.Response):
        return body, ""
    request[BODY] = body
    model = str(body.get("model", ""))
    until = state.locked_until.get((token, model), 0.0)
    if until > now:
        text = (
            f"Too many failed attempts (> {state.options.error_budget}) resulting in a "
            f"non-success status code. Please wait 30s and try again."
        )
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-resets": str(int(until * 1000))}
        return _error(429, text, headers), model
    if bucket is not None and not state.admit(token, bucket, now):
        return _error(429, "Rate limit exceeded", state.limit_headers(token, bucket, now)), model
    return None, model


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or ""
    if route not in _GUARDED:
        return await handler(request)
    state, now, bucket = request.app[STATE], time.time(), _GUARDED[route]
    token = bearer_token(request) or ""
    early, model = await _precheck(request, state, token, bucket, now)
    response = early if early is not None else await handler(request)
    state.record(token, model, response.status, now)
    if bucket is not None and token and not response.prepared:
        response.headers.update(state.limit_headers(token, bucket, now))
    return response


# ----- queue validation --------------------------------------------------------------------


def _check_common(body: dict[str, Any]) -> tuple[str, str] | None:
    unknown = sorted(set(body) - _QUEUE_FIELDS)
    if unknown:
        return unknown[0], "Unrecognized key in object"
    model = body.get("model")
    if not isinstance(model, str) or model not in VENICE_MODELS:
        return "model", f"Unknown or unsupported video model: {model!r}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return "prompt", "String must contain at least 1 character(s)"
    limit = VENICE_MODELS[model].caps.max_prompt_chars
    if len(prompt) > limit:
        return "prompt", f"Prompt is {len(prompt)} characters; this model allows {limit}"
    return None


def _check_params(body: dict[str, Any], vm: VeniceModel, *, quote: bool) -> tuple[str, str] | None:
    caps = vm.caps
    allowed = [f"{d}s" for d in caps.durations]
    if body.get("duration") not in allowed:
        return "duration", f"Invalid duration {body.get('duration')!r}; allowed: {allowed}"
    ratio = body.get("aspect_ratio")
    if ratio is not None and not quote:  # quote accepts any ratio [D §1.3]
        if not caps.aspect_ratios:
            return "aspect_ratio", "This model does not support aspect_ratio"
        if ratio not in caps.aspect_ratios:
            return "aspect_ratio", f"Invalid aspect_ratio {ratio!r}; allowed: {caps.aspect_ratios}"
    resolution = body.get("resolution")
    if resolution is not None and resolution not in caps.resolutions:
        return "resolution", f"Invalid resolution {resolution!r}; allowed: {caps.resolutions}"
    audio = body.get("audio")
    if audio is not None and not isinstance(audio, bool):
        return "audio", "Expected boolean"
    if audio is not None and not vm.audio_configurable and not quote:
        return "audio", "This model does not support configuring audio"  # [I]
    return None


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://", "data:"))


def _check_media(body: dict[str, Any], vm: VeniceModel) -> tuple[str, str] | None:
    caps = vm.caps
    for name, allowed in (("image_url", caps.first_frame), ("end_image_url", caps.end_frame)):
        if name in body and (not allowed or not _is_url(body[name])):
            return name, "Not supported by this model" if not allowed else "Invalid URL"
    if caps.requires_image and "image_url" not in body:
        return "image_url", "This model requires image_url"
    for name, cap in _REF_FIELDS.items():
        refs = body.get(name, [])
        if not isinstance(refs, list) or not all(_is_url(r) for r in refs):
            return name, "Expected an array of http(s) or data: URLs"
        if len(refs) > getattr(caps, cap):
            return name, f"Array must contain at most {getattr(caps, cap)} element(s)"
    if body.get("reference_audio_urls") and not (
        body.get("reference_image_urls") or body.get("reference_video_urls")
    ):
        return "reference_audio_urls", "Reference audio needs at least one reference image/video"
    return None


def _valid_consents(value: Any) -> bool:
    """Exactly ``{seedance: {<three fields>: true}}`` [D §1.5]."""
    if not isinstance(value, dict) or set(value) != {SEEDANCE_CONSENT}:
        return False
    inner = value[SEEDANCE_CONSENT]
    return (
        isinstance(inner, dict)
        and set(inner) == set(CONSENT_FIELDS)
        and all(v is True for v in inner.values())
    )


def _scan(body: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Digest every media URL; return (all digests, face digest -> role). Runs in a thread."""
    digests: list[str] = []
    faces: dict[str, str] = {}
    for name in (*_FACE_FIELDS, "reference_audio_urls"):
        value = body.get(name)
        for url in value if isinstance(value, list) else [value] if value else []:
            content = _content(url)
            digest = hashlib.sha256(content).hexdigest()
            digests.append(digest)
            if name in _FACE_FIELDS and b"FACE" in content:
                faces[digest] = _FACE_FIELDS[name]
    return digests, faces


def _content(url: str) -> bytes:
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (binascii.Error, ValueError):
            return url.encode()
    return url.encode()


def _needs_consent(roles: set[str]) -> web.Response:
    body = {
        "error": {
            "code": "needs_consent",
            "message": "Seedance consent is required for this request.",
        },
        "consent_flow": SEEDANCE_CONSENT,
        "face_media_roles": sorted(roles),
        "consent": {
            "consent_version": "v2.0",
            "policy_text": (
                "You confirm you have read the Terms and Privacy Policy, that you have the legal "
                "right to use the likeness of every person shown, and that media is screened."
            ),
        },
        "docs_url": "https://docs.venice.ai/guides/media/seedance-face-consent",
    }
    return web.json_response(body, status=409)


# ----- handlers ----------------------------------------------------------------------------


async def queue(request: web.Request) -> web.Response:
    """``POST /video/queue``: validate, run the consent flow, create and charge the job."""
    state, body = request.app[STATE], request[BODY]
    problem = _check_common(body)
    vm = VENICE_MODELS.get(str(body.get("model")))
    if problem is None and vm is not None:
        problem = _check_params(body, vm, quote=False) or _check_media(body, vm)
    consents = body.get("consents")
    if problem is None and consents is not None and not _valid_consents(consents):
        problem = ("consents", "Consent must confirm exactly the three seedance fields as true")
    if problem is not None or vm is None:
        return _invalid(*(problem or ("model", "unknown")))
    unusable = await fetch_media(_media_items(body))
    if unusable is not None:
        return _invalid("media", f"Could not use the media: {unusable}")
    digests, faces = await anyio.to_thread.run_sync(_scan, body)
    if vm.face_consent:
        pending = {d: role for d, role in faces.items() if d not in state.attested}
        if pending and consents is None:
            state.consent_requests += 1
            return _needs_consent(set(pending.values()))
        if consents is not None:
            state.attested.update(faces)
    return _accept(request, state, body, vm, digests)


def _media_items(body: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """``(kind, url)`` of every media URL in a queue body [D §1.4 field list]."""
    kinds = {
        "image_url": "image",
        "end_image_url": "image",
        "audio_url": "audio",
        "video_url": "video",
        "reference_image_urls": "image",
        "reference_video_urls": "video",
        "reference_audio_urls": "audio",
    }
    items: list[tuple[str | None, str]] = []
    for name, kind in kinds.items():
        value = body.get(name)
        for url in value if isinstance(value, list) else [value]:
            if isinstance(url, str):
                items.append((kind, url))
    return items


def _accept(
    request: web.Request,
    state: VeniceState,
    body: dict[str, Any],
    vm: VeniceModel,
    digests: list[str],
) -> web.Response:
    seconds = int(str(body["duration"]).removesuffix("s"))
    cost = state.price(body["model"], seconds, body.get("resolution"))
    job = SimJob(
        queue_id=str(uuid.uuid4()),
        model=body["model"],
        prompt=body["prompt"],
        seconds=seconds,
        ratio=str(body.get("aspect_ratio") or "16:9"),
        created=time.time(),
        cost_usd=cost,
        private=vm.private,
    )
    state.jobs[job.queue_id] = job
    answer = {"model": job.model, "queue_id": job.queue_id}
    if vm.private:
        token = secrets.token_urlsafe(18)
        state.links[token] = Link(job.queue_id)
        answer["download_url"] = f"{origin(request)}{SHARE_PATH}/{token}"
    summary = {k: v for k, v in body.items() if k not in _FACE_FIELDS and "url" not in k}
    request.app[LEDGER].add(job.queue_id, job.model, {**summary, "media": digests}, cost_usd=cost)
    return web.json_response(answer)


def _job_of(
    state: VeniceState, body: dict[str, Any], extra: frozenset[str]
) -> web.Response | SimJob:
    unknown = sorted(set(body) - {"model", "queue_id"} - extra)
    if unknown:
        return _invalid(unknown[0], "Unrecognized key in object")
    if not isinstance(body.get("model"), str) or not isinstance(body.get("queue_id"), str):
        return _invalid("queue_id", "model and queue_id are required strings")
    job = state.jobs.get(body["queue_id"])
    if job is None or job.deleted or job.model != body["model"]:
        return _error(404, _MEDIA_NOT_FOUND)
    return job


async def retrieve(request: web.Request) -> web.Response:
    """``POST /video/retrieve``: PROCESSING JSON, then bytes / COMPLETED, or an error."""
    state, config = request.app[STATE], request.app[CONFIG]
    body = request[BODY]
    job = _job_of(state, body, frozenset({"delete_media_on_completion"}))
    if isinstance(job, web.Response):
        return job
    timeline = Timeline(job.created, config.latency_s)
    phase = timeline.phase()
    times = {
        "average_execution_time": int(config.latency_s * 1000),
        "execution_duration": int(max(0.0, time.time() - job.created) * 1000),
    }
    guide = state.options.guide_statuses
    if phase != "done":
        status = phase if guide else "PROCESSING"
        return web.json_response({"status": status, **times})
    if config.fail_prompts and config.fail_prompts in job.prompt:
        request.app[LEDGER].refund(job.queue_id)
        return _content_policy()
    if state.options.inference_fail_prompts and state.options.inference_fail_prompts in job.prompt:
        return _error(500, "Inference failed: the model could not generate this video")
    if job.private:
        return web.json_response({"status": "completed" if guide else "COMPLETED", **times})
    data = await anyio.to_thread.run_sync(clip, job.seconds, job.ratio)
    if body.get("delete_media_on_completion") is True:
        job.deleted = True
    return web.Response(body=data, content_type="video/mp4")


def _content_policy() -> web.Response:
    body = {
        "error": {
            "message": (
                "Your request was flagged by the provider's content policy. Credits have been "
                "refunded. Try using wan-2-7-text-to-video instead."
            ),
            "type": "provider_content_policy",
            "credits_refunded": True,
            "recommended_model": "wan-2-7-text-to-video",
        }
    }
    return web.json_response(body, status=422)


async def complete(request: web.Request) -> web.Response:
    """``POST /video/complete``: delete the job's media; later retrieves answer 404."""
    job = _job_of(request.app[STATE], request[BODY], frozenset())
    if isinstance(job, web.Response):
        return job
    job.deleted = True
    return web.json_response({"success": True})


async def quote(request: web.Request) -> web.Response:
    """``POST /video/quote``: the deterministic price; no job, no charge [D §1.3]."""
    state, body = request.app[STATE], request[BODY]
    vm = VENICE_MODELS.get(str(body.get("model")))
    if vm is None:
        return _invalid("model", f"Unknown or unsupported video model: {body.get('model')!r}")
    problem = _check_params(body, vm, quote=True)
    if problem is not None:
        return _invalid(*problem)
    seconds = int(str(body["duration"]).removesuffix("s"))
    return web.json_response({"quote": state.price(body["model"], seconds, body.get("resolution"))})


async def models(request: web.Request) -> web.Response:
    """``GET /models?type=video``: the §1.9 list (auth optional)."""
    kind = request.query.get("type", "video")
    if kind != "video":
        return _invalid("type", f"Invalid enum value {kind!r}")
    data = [_model_entry(ident, vm) for ident, vm in VENICE_MODELS.items()]
    return web.json_response({"object": "list", "type": "video", "data": data})


def _model_entry(ident: str, vm: VeniceModel) -> dict[str, Any]:
    caps = vm.caps
    constraints = {
        "model_type": vm.model_type,
        "aspect_ratios": list(caps.aspect_ratios),
        "resolutions": list(caps.resolutions),
        "durations": [f"{d}s" for d in caps.durations],
        "audio": caps.audio,
        "audio_configurable": vm.audio_configurable,
        "prompt_character_limit": caps.max_prompt_chars,
    }
    spec = {
        "name": ident,
        "privacy": "private" if vm.private else "anonymized",
        "offline": False,
        "traits": [],
        "model_sets": ["audio"] if caps.audio else [],
        "constraints": constraints,
    }
    return {
        "id": ident,
        "type": "video",
        "object": "model",
        "owned_by": "venice.ai",
        "created": 1773964800,
        "model_spec": spec,
    }


async def download(request: web.Request) -> web.Response:
    """``GET <download_url>``: no auth; 410 once used up, revoked or expired [D §1.8]."""
    state, config = request.app[STATE], request.app[CONFIG]
    link = state.links.get(request.match_info["token"])
    job = state.jobs.get(link.queue_id) if link is not None else None
    if link is None or job is None:
        return _error(404, "Not found")
    done_at = job.created + config.latency_s
    if time.time() < done_at:
        return _error(404, "Not ready")  # [I]
    if link.revoked or link.gets >= state.options.download_max_gets:
        return _error(410, "This link has expired, been used up or been revoked")
    if time.time() > done_at + config.url_ttl_s:
        return _error(410, "This link has expired, been used up or been revoked")
    link.gets += 1
    data = await anyio.to_thread.run_sync(clip, job.seconds, job.ratio)
    return web.Response(body=data, content_type="video/mp4")


async def revoke(request: web.Request) -> web.Response:
    """``DELETE <download_url>``: revoke the link; 204 [I] (body/status undocumented, §1.8)."""
    link = request.app[STATE].links.get(request.match_info["token"])
    if link is None:
        return _error(404, "Not found")
    link.revoked = True
    return web.Response(status=204)


def make_app(config: SimConfig, **options: Any) -> web.Application:
    """The Venice simulator application.

    Args:
        config: shared simulator settings (key, latency, fail prompts, URL lifetime).
        **options: fields of :class:`VeniceSimOptions` (``queue_per_minute``,
            ``retrieve_per_minute``, ``error_budget``, ``download_max_gets``,
            ``price_per_second``, ``max_body_bytes``, ``guide_statuses``...).

    Raises:
        TypeError: an unknown option.
    """
    app = new_app(config, _error_body)
    app.middlewares.append(_guard)
    app[STATE] = VeniceState(VeniceSimOptions(**options))
    app.router.add_post(f"{BASE_PATH}/video/quote", quote, name="quote")
    app.router.add_post(f"{BASE_PATH}/video/queue", queue, name="submit")
    app.router.add_post(f"{BASE_PATH}/video/retrieve", retrieve, name="poll")
    app.router.add_post(f"{BASE_PATH}/video/complete", complete, name="complete")
    app.router.add_get(f"{BASE_PATH}/models", models, name="models")
    app.router.add_get(f"{SHARE_PATH}/{{token}}", download, name="fetch")
    app.router.add_delete(f"{SHARE_PATH}/{{token}}", revoke, name="delete")
    return app
