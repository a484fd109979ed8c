"""Request rules of the RelayDance simulator (:mod:`pipeline.sim.relaydance.app`).

Written from https://relaydance.com/docs/api-reference/generate-video (and the FAQ at
https://relaydance.com/docs/faq), independently of the adapter: the simulated models with what
each accepts, and :func:`check_body`: the submit body's model, prompt, string ``seconds``,
``metadata`` (ratio, resolution, audio flag, callback) and its ``content`` items (types, roles,
per-type counts).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

MAX_SECONDS = 15  # the FAQ's overall cap
#: "image_url ... at most 9 per request; video_url ... 3; audio_url ... 3".
MAX_ITEMS = {"image_url": 9, "video_url": 3, "audio_url": 3}
#: Roles per content type: the documented ``reference_*`` roles, and the first/last frame roles
#: of the (mutually exclusive) frame mode [I: role names].
ROLES = {
    "image_url": {"first_frame", "last_frame", "reference_image"},
    "video_url": {"reference_video"},
    "audio_url": {"reference_audio"},
}
#: Ratios of the Seedance 1.5 Pro models: the page's ratio examples "16:9", "9:16", "1:1"
#: (its reference-image example sends 1:1 to seedance-1-5-pro-with-audio).
RATIOS_1_5 = ("16:9", "9:16", "1:1")
#: Seedance 2.0 also takes 4:3, 3:4 and 21:9 [inferred].
RATIOS_2_0 = (*RATIOS_1_5, "4:3", "3:4", "21:9")


@dataclass(frozen=True, slots=True)
class SimModel:
    """What one simulated model accepts (ids: the page's examples and ``GET /v1/models``)."""

    seconds: tuple[int, int] = (4, 12)
    ratios: tuple[str, ...] = RATIOS_1_5
    resolutions: tuple[str, ...] = ("480p", "720p", "1080p")
    audio_flag: bool = False


#: Seedance 2.0: 4-15 s [I, within the FAQ's 15 s]; the resolution is in the id where it has
#: one; ``generate_audio`` applies to "Seedance 2.0 series models". Seedance 1.5 Pro: 4-12 s
#: [inferred].
SIM_MODELS: dict[str, SimModel] = {
    "doubao-seedance-2-0-720p": SimModel((4, 15), RATIOS_2_0, ("720p",), audio_flag=True),
    "doubao-seedance-2-0-1080p": SimModel((4, 15), RATIOS_2_0, ("1080p",), audio_flag=True),
    "doubao-seedance-2-0-fast-260128": SimModel(
        (4, 15), RATIOS_2_0, ("480p", "720p"), audio_flag=True
    ),
    "seedance-1-5-pro-with-audio": SimModel(),
    "seedance-1-5-pro-no-audio": SimModel(),
}

Problem = tuple[int, str] | None


def check_body(body: Any, allowed_models: Collection[str] | None) -> Problem:
    """The first problem of a submit body as ``(status, message)``, or None.

    ``allowed_models``: the models the key may use (None: all); others answer 403.
    """
    if not isinstance(body, dict):
        return 400, "request body must be a JSON object"
    if "callback_url" in body:
        return 400, "callback_url must be inside metadata"  # "不能放在顶层"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "model is required"
    if model not in SIM_MODELS:
        return 404, f"model {model} not found"
    if allowed_models is not None and model not in allowed_models:
        return 403, f"model {model} is not available for this API key"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return 400, "prompt is required and must be a string"
    seconds = body.get("seconds", "5")
    if not isinstance(seconds, str) or not seconds.isdigit():
        return 400, 'seconds must be a string of whole seconds, e.g. "5"'  # "以字符串形式传入"
    low, high = SIM_MODELS[model].seconds
    if not low <= int(seconds) <= min(high, MAX_SECONDS):
        return 400, f"seconds must be between {low} and {high} for {model}"
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        return 400, "metadata must be an object"
    return _check_metadata(metadata, model)


def _check_metadata(meta: dict[str, Any], model: str) -> Problem:
    spec = SIM_MODELS[model]
    ratio = meta.get("ratio", "16:9")
    if ratio not in spec.ratios:
        return 400, f"ratio {ratio!r} is not supported by {model} ({', '.join(spec.ratios)})"
    resolution = meta.get("resolution", spec.resolutions[-1])
    if resolution not in spec.resolutions:
        return 400, f"resolution {resolution!r} is not supported by {model}"
    if "generate_audio" in meta and not isinstance(meta["generate_audio"], bool):
        return 400, "generate_audio must be a boolean"
    if "callback_url" in meta and not isinstance(meta["callback_url"], str):
        return 400, "callback_url must be a string"
    content = meta.get("content", [])
    if not isinstance(content, list):
        return 400, "content must be an array"
    return _check_content(content)


def _check_item(item: Any) -> tuple[str, str] | str:
    """``(type, role)`` of a valid content item, else the problem text."""
    if not isinstance(item, dict) or item.get("type") not in ROLES:
        return "content items need type image_url, video_url or audio_url"
    kind = str(item["type"])
    ref = item.get(kind)
    if not isinstance(ref, dict) or not isinstance(ref.get("url"), str):
        return f"{kind} item needs {{{kind!r}: {{'url': ...}}}}"
    url = str(ref["url"])
    if not (
        url.startswith(("http://", "https://")) or (kind == "image_url" and url[:5] == "data:")
    ):
        return f"{kind} url must be http(s)" + (" or a data: URL" if kind == "image_url" else "")
    role = item.get("role")
    if role not in ROLES[kind]:
        return f"role {role!r} is not valid for {kind}"
    return kind, str(role)


def _check_content(content: list[Any]) -> Problem:
    counts = dict.fromkeys(MAX_ITEMS, 0)
    roles: set[str] = set()
    for item in content:
        checked = _check_item(item)
        if isinstance(checked, str):
            return 400, checked
        counts[checked[0]] += 1
        roles.add(checked[1])
    for kind, limit in MAX_ITEMS.items():
        if counts[kind] > limit:
            return 400, f"too many {kind} items: {counts[kind]} > {limit}"
    if "reference_image" in roles and roles & {"first_frame", "last_frame"}:
        return (
            400,
            "reference images cannot be combined with first/last frames",
        )  # "与首尾帧模式互斥"
    return None
