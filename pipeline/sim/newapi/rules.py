"""Request rules of the New API gateway simulator (:mod:`pipeline.sim.newapi.app`).

Written from the gateway's "create video task (legacy)" page for Vidu Q3
(``POST /v1/video/generations``,
https://docs.uniall.ai/zh-CN/models/video/vidu/create-task-old ; the gateway runs New API,
https://github.com/QuantumNous/new-api), independently of the adapter. :func:`validate` checks
a submit body against the simulator's own table :data:`MODELS`: prompt length, duration and
ratio per model, image and reference URLs, and the Vidu ``extra_body`` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

#: Vidu Q3 ``duration``: "允许值:1 到 16" (1 to 16 seconds).
DURATIONS = range(1, 17)
#: Ratios: 16:9, 9:16 and 1:1 on every Vidu Q3 route; 4:3 and 3:4 on some routes, here the
#: ``viduq3p`` pro family [inferred]. (The page only shows 16:9.)
RATIOS = ("16:9", "9:16", "1:1")
RATIOS_PRO = (*RATIOS, "4:3", "3:4")
#: Prompt cap: Vidu Q3 takes at most 2000 characters [I: not on the gateway page].
MAX_PROMPT = 2000
#: Reference images of the ``mix`` mode: at most 7 (Vidu's reference-to-video limit) [inferred].
MAX_REFS = 7
OFFPEAK_SUFFIX = "-offpeak"


def _table() -> dict[str, tuple[str, ...]]:
    """Model id -> the ratios it takes.

    The ids are the page's model list (viduq3p-540p/720p/1080p, viduq3t-540p/720p/1080p) plus
    its examples (``viduq3p-mix-720p``, ``viduq3p-1080p-offpeak``); off-peak variants of the
    other pro resolutions [inferred].
    """
    models: dict[str, tuple[str, ...]] = {}
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3p-{res}"] = RATIOS_PRO
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3t-{res}"] = RATIOS
    models["viduq3p-mix-720p"] = RATIOS
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3p-{res}{OFFPEAK_SUFFIX}"] = RATIOS_PRO
    return models


#: Model id -> accepted ``aspect_ratio`` values (read-only).
MODELS: Mapping[str, tuple[str, ...]] = MappingProxyType(_table())


def resolution_of(model: str) -> str:
    """The resolution a model id encodes (``viduq3p-1080p-offpeak`` -> ``1080p``)."""
    return model.removesuffix(OFFPEAK_SUFFIX).rsplit("-", 1)[-1]


def _check_prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if len(prompt) > MAX_PROMPT:
        return f"prompt is {len(prompt)} characters, above {MAX_PROMPT}"
    return None


def duration_of(value: object) -> int | None:
    """``duration`` as int: the page types it as a string, its examples send integers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_shape(body: dict[str, Any], model: str) -> str | None:
    ratios = MODELS[model]
    duration = duration_of(body.get("duration", 5))  # New API's Vidu default: 5 s
    if duration is None:
        return "duration must be an integer number of seconds"
    if duration not in DURATIONS:
        return f"duration {duration} is not supported by {model} (1-16)"
    ratio = body.get("aspect_ratio", "16:9")
    if ratio not in ratios:
        return f"aspect_ratio {ratio!r} is not supported by {model}: {', '.join(ratios)}"
    return None


def _is_media(value: object) -> bool:
    return isinstance(value, str) and (
        value.startswith(("https://", "http://")) or value.startswith("data:image/")
    )


def _check_images(body: dict[str, Any]) -> str | None:
    for name in ("image", "last_image"):
        if body.get(name) is not None and not _is_media(body[name]):
            return f"{name} must be an http(s) URL or a data:image/...;base64 URL"
    if body.get("last_image") is not None and body.get("image") is None:
        return "last_image requires image (start-end generation)"  # "不支持只传入last_image"
    refs = body.get("reference_image_urls")
    if refs is None:
        return None
    if not isinstance(refs, list) or not all(_is_media(r) for r in refs):
        return "reference_image_urls must be a list of image URLs"
    if len(refs) > MAX_REFS:
        return f"too many reference images: {len(refs)} (at most {MAX_REFS})"
    return None


def _check_extra(body: dict[str, Any], model: str) -> str | None:
    extra = body.get("extra_body", {})
    if not isinstance(extra, dict):
        return "extra_body must be an object"
    for name, kind in (("audio", bool), ("bgm", bool), ("seed", int)):
        value = extra.get(name)
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if value is not None and wrong:
            return f"extra_body.{name} must be a {kind.__name__}"
    # Vidu: off-peak mode is unavailable with audio off; audio is on unless extra_body turns
    # it off, so an off-peak body without extra_body (the page's example) is fine.
    if model.endswith(OFFPEAK_SUFFIX) and extra.get("audio", True) is False:
        return "off-peak mode is unavailable when audio is off"
    return None


def validate(body: object) -> tuple[int, str, str] | None:
    """The first problem of a submit body as ``(status, code, message)``, or None.

    Unknown model: 503 ``get_channel_failed`` (New API's code; the status [inferred]); anything
    else: 400 ``invalid_request`` [inferred].
    """
    if not isinstance(body, dict):
        return 400, "invalid_request", "request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "invalid_request", "model is required"
    if model not in MODELS:
        return 503, "get_channel_failed", f"model {model} is temporarily unavailable"
    for problem in (_check_prompt(body), _check_shape(body, model), _check_images(body)):
        if problem:
            return 400, "invalid_request", problem
    problem = _check_extra(body, model)
    return (400, "invalid_request", problem) if problem else None
