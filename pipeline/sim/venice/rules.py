"""Request rules of the Venice simulator (:mod:`pipeline.sim.venice.app`).

Its error answers, the queue/quote parameter validation per model (the simulator's own table in
:mod:`pipeline.sim.venice.models`) and the Seedance face-consent scan, after
https://docs.venice.ai/api-reference/endpoint/video/queue ,
https://docs.venice.ai/guides/media/seedance-face-consent and
https://docs.venice.ai/api-reference/error-codes .

Each ``check_*`` function returns ``(field, message)`` for the first problem, or None; the
handlers turn it into a 400 DetailedError with :func:`invalid`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pipeline.sim.venice.models import (
    CONSENT_FIELDS,
    SEEDANCE_CONSENT,
    SIM_MODELS,
    UPSCALE_FACTORS,
    SimModel,
)

# fmt: off
_QUEUE_FIELDS = frozenset((  # the queue request schema
    "model", "prompt", "negative_prompt", "duration", "aspect_ratio", "resolution",
    "upscale_factor", "audio", "image_url", "end_image_url", "audio_url", "video_url",
    "reference_image_urls", "reference_video_urls", "reference_audio_urls",
    "reference_document_urls", "elements", "scene_image_urls", "keyframes",
    "omni_reference_task_type", "consents", "bitrate_mode", "camera_trajectory",
))
# fmt: on
#: Reference arrays and the :class:`SimModel` attribute with their cap.
_REF_FIELDS = {
    "reference_image_urls": "ref_images",
    "reference_video_urls": "ref_videos",
    "reference_audio_urls": "ref_audio",
}
#: Fields no simulated model takes ("advanced element support", e.g. Kling O3 R2V; Wan 3.0
#: documents; keyframes of other families) [I: refused as unsupported].
_UNSUPPORTED = ("elements", "scene_image_urls", "reference_document_urls", "keyframes")
#: Fields checked for faces, with their ``face_media_roles`` names.
FACE_FIELDS = {
    "image_url": "image",
    "end_image_url": "end_image",
    "reference_image_urls": "reference_image",
    "reference_video_urls": "reference_video",
}


# ----- answers -----------------------------------------------------------------------------


def error_body(status: int, message: str) -> dict[str, Any]:
    """StandardError ``{"error": "..."}`` (also used for injected faults)."""
    return {"error": message}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A StandardError answer ``{"error": message}`` with ``status``."""
    return web.json_response(error_body(status, message), status=status, headers=headers)


def invalid(name: str, message: str) -> web.Response:
    """400 DetailedError with zod-style ``details`` and ``issues``."""
    body = {
        "error": "Invalid request parameters",
        "details": {"_errors": [], name: {"_errors": [message]}},
        "issues": [{"path": [name], "message": message}],
    }
    return web.json_response(body, status=400)


def x402(request: web.Request) -> web.Response:
    """402 for a request without any credentials: the x402 discovery body.

    The queue page: "When using x402, a 402 Payment Required response indicates insufficient
    balance and includes top-up instructions".
    """
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


def content_policy() -> web.Response:
    """422 ``provider_content_policy`` with a refund and a suggested model (on retrieve)."""
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


# ----- queue validation --------------------------------------------------------------------


def check_common(body: dict[str, Any]) -> tuple[str, str] | None:
    """Fields, model, prompt and negative prompt of a queue body."""
    unknown = sorted(set(body) - _QUEUE_FIELDS)
    if unknown:
        return unknown[0], "Unrecognized key in object"
    model = body.get("model")
    if not isinstance(model, str) or model not in SIM_MODELS:
        return "model", f"Unknown or unsupported video model: {model!r}"
    limit = SIM_MODELS[model].prompt_limit
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return "prompt", "String must contain at least 1 character(s)"
    if len(prompt) > limit:
        return "prompt", f"Prompt is {len(prompt)} characters; this model allows {limit}"
    negative = body.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or len(negative) > limit):
        return "negative_prompt", f"Expected a string of at most {limit} characters"
    return None


def check_params(body: dict[str, Any], vm: SimModel, *, quote: bool) -> tuple[str, str] | None:
    """Duration, ratio, resolution, audio and upscale factor against ``vm``.

    ``quote``: the quote route, which takes ``aspect_ratio`` for every model (a pricing input).
    """
    if body.get("duration") not in vm.durations:
        return "duration", f"Invalid duration {body.get('duration')!r}; allowed: {vm.durations}"
    ratio = body.get("aspect_ratio")
    if ratio is not None and not quote:
        if not vm.aspect_ratios:
            return "aspect_ratio", "This model does not support aspect_ratio"
        if ratio not in vm.aspect_ratios:
            return "aspect_ratio", f"Invalid aspect_ratio {ratio!r}; allowed: {vm.aspect_ratios}"
    resolution = body.get("resolution")
    if resolution is not None:
        if not vm.resolutions:
            return "resolution", "This model does not support resolution"
        if resolution not in vm.resolutions:
            return "resolution", f"Invalid resolution {resolution!r}; allowed: {vm.resolutions}"
    audio = body.get("audio")
    if audio is not None and not isinstance(audio, bool):
        return "audio", "Expected boolean"
    if audio is not None and not vm.audio_configurable and not quote:
        return "audio", "This model does not support configuring audio"  # [inferred]
    factor = body.get("upscale_factor")
    if factor is not None and (type(factor) is not int or factor not in UPSCALE_FACTORS):
        return "upscale_factor", f"Invalid enum value; expected one of {UPSCALE_FACTORS}"
    return None  # an upscale_factor on other models is their documented default, ignored [inferred]


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://", "data:"))


def check_media(body: dict[str, Any], vm: SimModel) -> tuple[str, str] | None:
    """Frame, video, audio and reference URLs, and their counts, against ``vm``."""
    for name in ("image_url", "end_image_url", "video_url", "audio_url"):
        if name in body:
            if name not in vm.media:
                return name, "Not supported by this model"
            if not _is_url(body[name]):
                return name, "Must be a URL (http/https) or a data URL"
    for name in vm.required:
        if name not in body:
            return name, f"This model requires {name}"
    for name in _UNSUPPORTED:
        if name in body:
            return name, "Not supported by this model"
    for name, cap in _REF_FIELDS.items():
        refs = body.get(name, [])
        if not isinstance(refs, list) or not all(_is_url(r) for r in refs):
            return name, "Expected an array of http(s) or data: URLs"
        if len(refs) > getattr(vm, cap):
            return name, f"Array must contain at most {getattr(vm, cap)} element(s)"
    if body.get("reference_audio_urls") and not (
        body.get("reference_image_urls") or body.get("reference_video_urls")
    ):
        return "reference_audio_urls", "Reference audio needs at least one reference image/video"
    return None


def valid_consents(value: Any) -> bool:
    """Whether ``value`` is a valid ``consents`` object.

    ``{}`` (no attestation, as in the queue page's example) or exactly
    ``{seedance: {<three fields>: true}}``.
    """
    if value == {}:
        return True
    if not isinstance(value, dict) or set(value) != {SEEDANCE_CONSENT}:
        return False
    inner = value[SEEDANCE_CONSENT]
    return (
        isinstance(inner, dict)
        and set(inner) == set(CONSENT_FIELDS)
        and all(v is True for v in inner.values())
    )


def scan(body: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Digest every media URL; return (all digests, face digest -> role). Runs in a thread."""
    digests: list[str] = []
    faces: dict[str, str] = {}
    for name in (*FACE_FIELDS, "reference_audio_urls"):
        value = body.get(name)
        for url in value if isinstance(value, list) else [value] if value else []:
            content = _content(url)
            digest = hashlib.sha256(content).hexdigest()
            digests.append(digest)
            if name in FACE_FIELDS and b"FACE" in content:
                faces[digest] = FACE_FIELDS[name]
    return digests, faces


def _content(url: str) -> bytes:
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (binascii.Error, ValueError):
            return url.encode()
    return url.encode()


def needs_consent(roles: set[str]) -> web.Response:
    """409 ``needs_consent`` naming the face ``roles``."""
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


def media_items(body: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """``(kind, url)`` of every media URL in a queue body (the queue schema's URL fields)."""
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
