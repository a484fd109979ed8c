"""Pure codec of a New-API-style gateway serving Vidu Q3 (docs/providers/newapi.md §3). No I/O here.

Request building, status normalisation and error-body parsing for the legacy
``/v1/video/generations`` family, tested on recorded bodies in ``tests/data/newapi/``:

- :func:`build_submit` makes the seed gateway's submit body (§3.2 [seed doc]);
- :func:`parse_submit` reads the ``OpenAIVideo``-style submit answer (§3.2, quirk §3.5.1);
- :func:`parse_status` accepts all three query shapes of §3.3 (A ``TaskResponse`` wrapper with
  uppercase statuses, B ``queued|processing|succeeded|failed`` wrapped or bare, C the OpenAI
  ``video`` object) and every URL location of §3.5.4;
- :func:`parse_error` reads task errors ``{"code","message","data"}`` and relay errors
  ``{"error":{"message","type","param","code"}}`` (§3.4).

The capability table :data:`MODELS` lives here too (pure data shared by the adapter's
``SPEC`` and the simulator).

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pipeline.errors import Rejected
from pipeline.models import MediaRef, MediaRole, ModelCaps, Shot

NAME = "newapi"

#: Vidu Q3: 1-16 s [newapi.md §3.2 modelstream/runpod/novita docs].
DURATIONS = tuple(range(1, 17))
#: 16:9, 9:16, 1:1 [newapi.md §3.2]; 4:3 and 3:4 exist "on some routes" [newapi.md §3.2] -- put on
#: the
#: ``viduq3p`` (pro) family only [inferred].
RATIOS = ("16:9", "9:16", "1:1")
RATIOS_PRO = (*RATIOS, "4:3", "3:4")
#: Prompt <= 2000 characters [newapi.md §3.2] (5000 in subject mode, not used here).
MAX_PROMPT = 2000
#: Reference images: up to 7 [inferred] (Vidu reference2video takes several; the count is not in
#: §3).
MAX_REFS = 7
OFFPEAK_SUFFIX = "-offpeak"


def _caps(resolution: str, ratios: tuple[str, ...]) -> ModelCaps:
    # Resolution is encoded in the model id [newapi.md §3.2, quirk §3.5.6]; end frame via
    # ``last_image``
    # and native audio [newapi.md §3.2 "native audio on by default"].
    return ModelCaps(
        durations=DURATIONS,
        aspect_ratios=ratios,
        resolutions=(resolution,),
        max_prompt_chars=MAX_PROMPT,
        first_frame=True,
        end_frame=True,
        max_reference_images=MAX_REFS,
        audio=True,
    )


def _table() -> dict[str, ModelCaps]:
    models: dict[str, ModelCaps] = {}
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3p-{res}"] = _caps(res, RATIOS_PRO)  # [seed doc §3.2]
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3t-{res}"] = _caps(res, RATIOS)  # viduq3t-* named in §3.2; caps [inferred]
    models["viduq3p-mix-720p"] = _caps("720p", RATIOS)  # [seed doc §3.2]; caps [inferred]
    # "-offpeak variants" [seed doc §3.2]; which models have one and the suffix position [inferred].
    for res in ("540p", "720p", "1080p"):
        models[f"viduq3p-{res}{OFFPEAK_SUFFIX}"] = _caps(res, RATIOS_PRO)
    return models


#: Capability table per model id (see the comments on each constant for the sources).
MODELS: Mapping[str, ModelCaps] = MappingProxyType(_table())


# ----- requests ------------------------------------------------------------------------------


def build_submit(shot: Shot, media: Sequence[MediaRef]) -> dict[str, Any]:
    """The seed gateway's submit body for ``shot`` (§3.2 [seed doc]).

    Shape: ``{model, prompt, duration:int, aspect_ratio, image?, last_image?,
    reference_image_urls?, extra_body?:{audio?, seed?, **shot.extra}}``. Resolution is not sent:
    the model id encodes it. ``audio`` is sent only when the shot sets it (unset: the gateway's
    default); ``extra_body`` is left out when empty, as in the documented first/last-frame
    example (New API ``POST /v1/video/generations``,
    https://docs.newapi.pro/api/query-video).

    Raises:
        Rejected: a reference video/audio, or more than one first/last frame (the gateway takes
            images only).
    """
    body: dict[str, Any] = {
        "model": shot.model,
        "prompt": shot.prompt,
        "duration": int(shot.duration),
        "aspect_ratio": shot.aspect_ratio,
    }
    refs: list[str] = []
    for ref in media:
        if ref.role == MediaRole.REFERENCE_IMAGE:
            refs.append(ref.url)
            continue
        field = {MediaRole.IMAGE: "image", MediaRole.END_IMAGE: "last_image"}.get(ref.role)
        if field is None:
            raise Rejected(
                f"{NAME} (Vidu Q3) takes images only, not a {ref.role.value}",
                provider=NAME,
                shot=shot.id,
            )
        if field in body:
            raise Rejected(f"more than one {ref.role.value}", provider=NAME, shot=shot.id)
        body[field] = ref.url
    if refs:
        body["reference_image_urls"] = refs
    extra: dict[str, Any] = {}
    if shot.audio is not None:
        extra["audio"] = shot.audio  # unset: left out, the gateway's default applies
    if shot.seed is not None:
        extra["seed"] = int(shot.seed)
    extra.update(shot.extra)
    if extra:
        body["extra_body"] = extra
    return body


# ----- responses -----------------------------------------------------------------------------
