"""Request rules of the seedance2.ink simulator (:mod:`pipeline.sim.seedance2.app`).

Written from https://www.seedance2.ink/docs (API reference, text-to-video and image-to-video
pages), independently of the adapter: the models, durations, ratios and resolutions it accepts,
the ``mediaUrls`` rules (1-5 public https URLs, loopback http only when allowed), the defaults
of omitted fields [inferred], and the credit price of a task. :func:`validate` turns a submit body
into a :class:`TaskRequest` or the ``(code, message)`` of its first problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pipeline.sim.common import LOOPBACK

#: Durations per model: "seedance-2.0 and seedance-2.0-fast support 4 to 15 seconds, while
#: seedance-1.5-pro supports 5 or 10 seconds"; and credits per second at 720p. The documented
#: examples (text-to-video 5 s 720p: 40 credits) give 8 for seedance-2.0; the other two are
#: [inferred].
SIM_MODELS: Mapping[str, tuple[tuple[int, ...], float]] = MappingProxyType(
    {
        "seedance-2.0": (tuple(range(4, 16)), 8.0),
        "seedance-2.0-fast": (tuple(range(4, 16)), 5.0),
        "seedance-1.5-pro": ((5, 10), 6.0),
    }
)
#: Credit factor per ``resolution`` (720p 1.0 is the documented base; the others [inferred]).
RESOLUTION_FACTOR: Mapping[str, float] = MappingProxyType({"480p": 0.6, "720p": 1.0, "1080p": 1.5})
#: Credit factor with ``mediaUrls``: the documented image-to-video example costs 64 credits
#: where text-to-video costs 40.
MEDIA_FACTOR = 1.6


def credits_for(model: str, duration: int, resolution: str, with_media: bool) -> int:
    """Credits a task costs, rounded up: 40 for seedance-2.0 5 s 720p, 64 with ``mediaUrls``."""
    amount = SIM_MODELS[model][1] * duration * RESOLUTION_FACTOR[resolution]
    return math.ceil(amount * (MEDIA_FACTOR if with_media else 1.0) - 1e-9)


RATIOS = ("16:9", "9:16", "1:1")  # "one of: 16:9, 9:16, 1:1"
MAX_MEDIA = 5  # "mediaUrls supports up to 5 items"


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A validated submit body (omitted fields filled with the [inferred] defaults)."""

    model: str
    prompt: str
    duration: int
    aspect_ratio: str
    resolution: str
    media_urls: list[str]
    webhook_url: str | None
    metadata: dict[str, Any] | None


# ----- validation ---------------------------------------------------------------------------------


Problem = tuple[str, str]


def check_options(body: dict[str, Any], model: str) -> Problem | None:
    """Duration (allowed for ``model``), aspect ratio and resolution, with their defaults."""
    durations, _ = SIM_MODELS[model]
    duration = body.get("duration", 5)
    if type(duration) is not int:
        return "invalid_duration", "duration must be an integer number of seconds"
    if duration not in durations:
        allowed = ", ".join(str(d) for d in durations)
        return "invalid_duration", f"duration {duration} is not allowed for {model} ({allowed})"
    ratio = body.get("aspectRatio", "16:9")
    if ratio not in RATIOS:
        return "invalid_aspect_ratio", f"aspectRatio must be one of {', '.join(RATIOS)}"
    resolution = body.get("resolution", "720p")
    if not isinstance(resolution, str) or resolution not in RESOLUTION_FACTOR:
        return "invalid_resolution", f"resolution must be one of {', '.join(RESOLUTION_FACTOR)}"
    return None


def check_media(urls: Any, allow_loopback: bool) -> Problem | None:
    """``mediaUrls``: 1-5 public https URLs (loopback http only with ``allow_loopback``)."""
    if urls is None:
        return None
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_MEDIA:
        return "invalid_media_urls", f"mediaUrls must be a list of 1-{MAX_MEDIA} URLs"
    for url in urls:
        if not isinstance(url, str):
            return "invalid_media_urls", "mediaUrls must contain strings"
        parts = urlsplit(url)
        if parts.scheme == "data":
            return "invalid_media_urls", "data: URLs are not supported; use public HTTPS URLs"
        loopback = parts.scheme == "http" and parts.hostname in LOOPBACK and allow_loopback
        if not ((parts.scheme == "https" and parts.hostname) or loopback):
            return "invalid_media_urls", "mediaUrls must be public HTTPS URLs"
    return None


def validate(body: Any, allow_loopback: bool) -> TaskRequest | Problem:
    """The submit ``body`` as a :class:`TaskRequest`, or ``(code, message)`` of its problem."""
    if not isinstance(body, dict):
        return "invalid_request", "the request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or model not in SIM_MODELS:
        return "invalid_model", f"model must be one of {', '.join(SIM_MODELS)}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "invalid_prompt", "prompt is required"
    problem = check_options(body, model) or check_media(body.get("mediaUrls"), allow_loopback)
    if problem:
        return problem
    webhook, metadata = body.get("webhookUrl"), body.get("metadata")
    if webhook is not None and not isinstance(webhook, str):
        return "invalid_request", "webhookUrl must be a string"
    if metadata is not None and not isinstance(metadata, dict):
        return "invalid_request", "metadata must be an object"
    return TaskRequest(
        model=model,
        prompt=prompt,
        duration=body.get("duration", 5),
        aspect_ratio=body.get("aspectRatio", "16:9"),
        resolution=body.get("resolution", "720p"),
        media_urls=list(body.get("mediaUrls") or []),
        webhook_url=webhook,
        metadata=metadata,
    )
