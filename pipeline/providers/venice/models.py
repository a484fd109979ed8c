"""The Venice video model table (venice.md §1.4, §1.9), shared by the adapter and simulator.

:data:`VENICE_MODELS` holds every model with its :class:`~pipeline.models.ModelCaps` and the
Venice-only facts: which models are *private* (their queue answer carries a one-time
``download_url``, §1.8), which take ``audio``, and which may ask for face consent (§1.5).
:data:`MODELS` is the capability view the adapter's ``SPEC`` uses. Re-exported by
:mod:`pipeline.providers.venice.codec`.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pipeline.models import ModelCaps

#: Default per-model prompt cap when ``prompt_character_limit`` is absent [venice.md §1.4, §1.9].
DEFAULT_PROMPT_LIMIT = 2500


@dataclass(frozen=True, slots=True)
class VeniceModel:
    """One Venice video model: its capabilities plus the Venice-only facts about it.

    Attributes:
        caps: what the model accepts (durations in seconds, ratios, resolutions, references).
        private: a Grok Imagine *private* model: the queue answer adds a one-time
            ``download_url`` and retrieve never streams bytes [venice.md §1.4, §1.6, §1.8].
        audio_configurable: the request may carry ``audio`` [venice.md §1.4 "only for
            audio-configurable models", §1.9 ``audio_configurable``].
        face_consent: an unlisted Seedance id that answers 409 needs_consent for face media
            [venice.md §1.5].
        model_type: ``text-to-video`` or ``image-to-video`` as ``/models`` reports it [venice.md
        §1.9].
    """

    caps: ModelCaps
    private: bool = False
    audio_configurable: bool = False
    face_consent: bool = False
    model_type: str = "text-to-video"


# Wan 2.7 (docs.venice.ai/models/wan-2-7-video, newer than docs/providers/): 5/10/15 s,
# 720p/1080p, 16:9 9:16 1:1, audio selectable (silent price table) [inferred]; default prompt cap
# [venice.md §1.4].
_WAN = ModelCaps(
    durations=(5, 10, 15),
    aspect_ratios=("16:9", "9:16", "1:1"),
    resolutions=("720p", "1080p"),
    max_prompt_chars=DEFAULT_PROMPT_LIMIT,
    first_frame=False,
    audio=True,
)
# Seedance 2.0: 4-15 s, 480p-4k [inferred: docs.venice.ai/models/seedance-2-0]; ratios [inferred];
# references
# <= 9 images / 3 videos / 3 audio [venice.md §1.4 Seedance 2.0 family caps].
_SEEDANCE_DURATIONS = tuple(range(4, 16))
_SEEDANCE_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
_SEEDANCE_RES = ("480p", "720p", "1080p")


# Input media limits of the Seedance family: reference images >= 300 px short side and
# 0.4-2.5 aspect [venice.md §1.9 constraints]; reference videos 2-15 s each, 15 s in all, <= 50 MB;
# audio <= 30 s [venice.md §1.4].
def _seedance_media(caps: ModelCaps) -> ModelCaps:
    return dataclasses.replace(
        caps,
        max_media_bytes=50 * 1024**2,
        min_image_short_side=300,
        image_aspect_range=(0.4, 2.5),
        reference_video_s=(2.0, 15.0),
        max_reference_video_total_s=15.0,
        max_reference_audio_s=30.0,
    )


#: The Seedance 2.0 prompt cap: "default 2500 characters, up to 10000 for some models such as
#: Seedance 2.0" (https://docs.venice.ai/api-reference/endpoint/video/queue).
SEEDANCE_PROMPT_LIMIT = 10000


def _seedance_family() -> dict[str, VeniceModel]:
    """``seedance-2-0[-fast]-{text,image,reference}-to-video[-basic]``.

    The family and its ``-fast-`` variants are named by the queue reference
    (https://docs.venice.ai/api-reference/endpoint/video/queue, example model
    ``seedance-2-0-text-to-video``); 4-15 s, 480p-1080p (fast: 480p/720p; the standard ``-basic``
    text-to-video also 4k) after https://docs.venice.ai/models/seedance-2-0. Image-to-video takes
    first and last frames and no ``aspect_ratio``; reference-to-video takes up to 9 images,
    3 videos and 3 audio files. The image and reference ids without ``-basic`` are unlisted
    and ask for face consent (https://docs.venice.ai/guides/media/seedance-face-consent).
    """
    out: dict[str, VeniceModel] = {}
    for prefix, res in (
        ("seedance-2-0", _SEEDANCE_RES),
        ("seedance-2-0-fast", ("480p", "720p")),
    ):
        t2v = ModelCaps(
            durations=_SEEDANCE_DURATIONS,
            aspect_ratios=_SEEDANCE_RATIOS,
            resolutions=res,
            max_prompt_chars=SEEDANCE_PROMPT_LIMIT,
            first_frame=False,
            audio=True,
        )
        i2v = _seedance_media(
            dataclasses.replace(
                t2v, aspect_ratios=(), first_frame=True, end_frame=True, requires_image=True
            )
        )
        r2v = _seedance_media(
            dataclasses.replace(
                t2v, max_reference_images=9, max_reference_videos=3, max_reference_audio=3
            )
        )
        i2v_type = "image-to-video"  # /models reports R2V as image-to-video too
        for mode, caps, kind in (
            ("text-to-video", t2v, "text-to-video"),
            ("image-to-video", i2v, i2v_type),
            ("reference-to-video", r2v, i2v_type),
        ):
            consent = mode != "text-to-video"
            out[f"{prefix}-{mode}"] = VeniceModel(
                caps, audio_configurable=True, face_consent=consent, model_type=kind
            )
            basic = caps
            if prefix == "seedance-2-0" and mode == "text-to-video":
                basic = dataclasses.replace(caps, resolutions=(*res, "4k"))
            out[f"{prefix}-{mode}-basic"] = VeniceModel(
                basic, audio_configurable=True, model_type=kind
            )
    return out


# Grok Imagine (private): 1-15 s, 480p/720p [inferred: docs.venice.ai/models/grok-imagine-video];
# ratios [inferred]; audio always generated (price table "with audio") [inferred].
_GROK = ModelCaps(
    durations=tuple(range(1, 16)),
    aspect_ratios=("16:9", "9:16", "1:1"),
    resolutions=("480p", "720p"),
    first_frame=False,
    audio=True,
)

_TABLE: dict[str, VeniceModel] = {
    "wan-2-7-text-to-video": VeniceModel(_WAN, audio_configurable=True),  # id [venice.md §1.4]
    "wan-2-7-image-to-video": VeniceModel(  # id and caps [inferred]
        ModelCaps(
            durations=_WAN.durations,
            aspect_ratios=(),  # the frame decides the ratio [inferred]
            resolutions=_WAN.resolutions,
            first_frame=True,
            requires_image=True,
            audio=True,
        ),
        audio_configurable=True,
        model_type="image-to-video",
    ),
    **_seedance_family(),
    "seedance-1-5-pro-image-to-video-basic": VeniceModel(  # constraints verbatim [venice.md §1.9]
        _seedance_media(
            ModelCaps(
                durations=(4, 5, 6),
                aspect_ratios=(),
                resolutions=("1080p", "720p", "480p"),
                max_prompt_chars=3500,
                first_frame=True,
                requires_image=True,
                audio=True,
            )
        ),
        audio_configurable=True,
        model_type="image-to-video",
    ),
    "grok-imagine-text-to-video-private": VeniceModel(_GROK, private=True),  # id [venice.md §1.4]
    "grok-imagine-image-to-video-private": VeniceModel(  # id [venice.md §1.4]; caps [inferred]
        ModelCaps(
            durations=_GROK.durations,
            aspect_ratios=(),
            resolutions=_GROK.resolutions,
            first_frame=True,
            requires_image=True,
            audio=True,
        ),
        private=True,
        model_type="image-to-video",
    ),
    "grok-imagine-reference-to-video-private": VeniceModel(  # id [venice.md §1.4]; caps [inferred]
        ModelCaps(
            durations=_GROK.durations,
            aspect_ratios=_GROK.aspect_ratios,
            resolutions=_GROK.resolutions,
            first_frame=False,
            max_reference_images=4,  # [inferred]
            audio=True,
        ),
        private=True,
        model_type="image-to-video",
    ),
}

#: Venice facts per model id (read-only).
VENICE_MODELS: Mapping[str, VeniceModel] = MappingProxyType(_TABLE)
#: Capability table per model id, for ``ProviderSpec.models``.
MODELS: Mapping[str, ModelCaps] = MappingProxyType({k: v.caps for k, v in _TABLE.items()})
#: Models whose queue answer carries a one-time ``download_url`` [venice.md §1.4].
PRIVATE_MODELS = frozenset(k for k, v in _TABLE.items() if v.private)
