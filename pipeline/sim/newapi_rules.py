"""Request rules of the New API gateway simulator (:mod:`pipeline.sim.newapi`) (§3.2, §3.4).

:func:`validate` checks a submit body against the adapter's model table
(:data:`pipeline.providers.newapi_codec.MODELS`): prompt length, duration and ratio per model,
image and reference URLs, and the Vidu ``extra_body`` fields.
"""

from __future__ import annotations

from typing import Any

from pipeline.providers.newapi_codec import MAX_PROMPT, MAX_REFS, MODELS, OFFPEAK_SUFFIX


def _check_prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if len(prompt) > MAX_PROMPT:
        return f"prompt is {len(prompt)} characters, above {MAX_PROMPT}"
    return None


def duration_of(value: object) -> int | None:
    """``duration`` as int; numeric strings are accepted like stock ``TaskSubmitReq`` [C]."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_shape(body: dict[str, Any], model: str) -> str | None:
    caps = MODELS[model]
    duration = duration_of(body.get("duration", 5))  # Vidu adaptor default 5 [C §3.2]
    if duration is None:
        return "duration must be an integer number of seconds"
    if duration not in caps.durations:
        return f"duration {duration} is not supported by {model} (1-16)"
    ratio = body.get("aspect_ratio", "16:9")
    if ratio not in caps.aspect_ratios:
        return (
            f"aspect_ratio {ratio!r} is not supported by {model}: {', '.join(caps.aspect_ratios)}"
        )
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
        return "last_image requires image (start-end generation)"  # [I]
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
    if model.endswith(OFFPEAK_SUFFIX) and extra.get("audio", True) is False:
        return "off-peak mode is unavailable when audio is off"  # [C §3.2]
    return None


def validate(body: object) -> tuple[int, str, str] | None:
    """The first problem of a submit body as ``(status, code, message)``, or None.

    Unknown model: 503 ``get_channel_failed`` [C code; status I]; anything else: 400
    ``invalid_request`` [I].
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
