"""Request rules of the Venice simulator (:mod:`pipeline.sim.venice`).

Its error answers, the queue/quote parameter validation per model, and the Seedance
face-consent scan [D §1.4, §1.5, §1.10].

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

from pipeline.providers.venice_codec import (
    CONSENT_FIELDS,
    SEEDANCE_CONSENT,
    VENICE_MODELS,
    VeniceModel,
)

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
FACE_FIELDS = {
    "image_url": "image",
    "end_image_url": "end_image",
    "reference_image_urls": "reference_image",
    "reference_video_urls": "reference_video",
}


# ----- answers -----------------------------------------------------------------------------


def error_body(status: int, message: str) -> dict[str, Any]:
    """StandardError ``{"error": "..."}`` [D §1.10] (also used for injected faults)."""
    return {"error": message}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A StandardError answer ``{"error": message}`` with ``status``."""
    return web.json_response(error_body(status, message), status=status, headers=headers)


def invalid(name: str, message: str) -> web.Response:
    """400 DetailedError with zod-style ``details`` and ``issues`` [D §1.10]."""
    body = {
        "error": "Invalid request parameters",
        "details": {"_errors": [], name: {"_errors": [message]}},
        "issues": [{"path": [name], "message": message}],
    }
    return web.json_response(body, status=400)


def x402(request: web.Request) -> web.Response:
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


def content_policy() -> web.Response:
    """422 ``provider_content_policy`` with a refund and a suggested model [D §1.6]."""
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
    """Fields, model and prompt of a queue body."""
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


def check_params(body: dict[str, Any], vm: VeniceModel, *, quote: bool) -> tuple[str, str] | None:
    """Duration, ratio, resolution and audio against ``vm`` (``quote``: the quote route)."""
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


def check_media(body: dict[str, Any], vm: VeniceModel) -> tuple[str, str] | None:
    """Frame and reference URLs, and their counts, against ``vm``."""
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


def valid_consents(value: Any) -> bool:
    """Exactly ``{seedance: {<three fields>: true}}`` [D §1.5]."""
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
    """409 ``needs_consent`` naming the face ``roles`` [D §1.5]."""
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
