"""The Venice video model table (providers.md §1.4, §1.9), shared by the adapter and simulator.

:data:`VENICE_MODELS` holds every model with its :class:`~pipeline.models.ModelCaps` and the
Venice-only facts: which models are *private* (their queue answer carries a one-time
``download_url``, §1.8), which take ``audio``, and which may ask for face consent (§1.5).
:data:`MODELS` is the capability view the adapter's ``SPEC`` uses. Re-exported by
:mod:`pipeline.providers.venice_codec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pipeline.models import ModelCaps

#: Default per-model prompt cap when ``prompt_character_limit`` is absent [D §1.4, §1.9].
DEFAULT_PROMPT_LIMIT = 2500


@dataclass(frozen=True, slots=True)
class VeniceModel:
    """One Venice video model: its capabilities plus the Venice-only facts about it.

    Attributes:
        caps: what the model accepts (durations in seconds, ratios, resolutions, references).
        private: a Grok Imagine *private* model: the queue answer adds a one-time
            ``download_url`` and retrieve never streams bytes [D §1.4, §1.6, §1.8].
        audio_configurable: the request may carry ``audio`` [D §1.4 "only for
            audio-configurable models", §1.9 ``audio_configurable``].
        face_consent: an unlisted Seedance id that answers 409 needs_consent for face media
            [D §1.5].
        model_type: ``text-to-video`` or ``image-to-video`` as ``/models`` reports it [C §1.9].
    """

    caps: ModelCaps
    private: bool = False
    audio_configurable: bool = False
    face_consent: bool = False
    model_type: str = "text-to-video"


# Wan 2.7 (docs.venice.ai/models/wan-2-7-video, newer than providers.md): 5/10/15 s, 720p/1080p,
# 16:9 9:16 1:1, audio selectable (silent price table) [I]; default prompt cap [D §1.4].
_WAN = ModelCaps(
    durations=(5, 10, 15),
    aspect_ratios=("16:9", "9:16", "1:1"),
    resolutions=("720p", "1080p"),
    max_prompt_chars=DEFAULT_PROMPT_LIMIT,
    first_frame=False,
    audio=True,
)
# Seedance 2.0: 4-15 s, 480p-4k [I docs.venice.ai/models/seedance-2-0]; ratios [I]; references
# <= 9 images / 3 videos / 3 audio [D §1.4 Seedance 2.0 family caps].
_SEEDANCE_DURATIONS = tuple(range(4, 16))
_SEEDANCE_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
_SEEDANCE_RES = ("480p", "720p", "1080p")


# Input media limits of the Seedance family: reference images >= 300 px short side and
# 0.4-2.5 aspect [C §1.9 constraints]; reference videos 2-15 s each, 15 s in all, <= 50 MB;
# audio <= 30 s [D §1.4].
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


# Grok Imagine (private): 1-15 s, 480p/720p [I docs.venice.ai/models/grok-imagine-video];
# ratios [I]; audio always generated (price table "with audio") [I].
_GROK = ModelCaps(
    durations=tuple(range(1, 16)),
    aspect_ratios=("16:9", "9:16", "1:1"),
    resolutions=("480p", "720p"),
    first_frame=False,
    audio=True,
)

_TABLE: dict[str, VeniceModel] = {
    "wan-2-7-text-to-video": VeniceModel(_WAN, audio_configurable=True),  # id [D §1.4]
    "wan-2-7-image-to-video": VeniceModel(  # id and caps [I]
        ModelCaps(
            durations=_WAN.durations,
            aspect_ratios=(),  # the frame decides the ratio [I]
            resolutions=_WAN.resolutions,
            first_frame=True,
            requires_image=True,
            audio=True,
        ),
        audio_configurable=True,
        model_type="image-to-video",
    ),
    "seedance-2-0-text-to-video-basic": VeniceModel(  # id [D §1.4]
        ModelCaps(
            durations=_SEEDANCE_DURATIONS,
            aspect_ratios=_SEEDANCE_RATIOS,
            resolutions=(*_SEEDANCE_RES, "4k"),
            first_frame=False,
            audio=True,
        ),
        audio_configurable=True,
    ),
    "seedance-2-0-image-to-video": VeniceModel(  # unlisted, face-consent eligible [D §1.5]
        _seedance_media(
            ModelCaps(
                durations=_SEEDANCE_DURATIONS,
                aspect_ratios=(),  # "This model does not support aspect_ratio" [D §1.4]
                resolutions=_SEEDANCE_RES,
                first_frame=True,
                end_frame=True,  # end_image_url is a face-checked field [D §1.5]
                requires_image=True,
                audio=True,
            )
        ),
        audio_configurable=True,
        face_consent=True,
        model_type="image-to-video",
    ),
    "seedance-2-0-reference-to-video": VeniceModel(  # unlisted, face-consent eligible [D §1.5]
        _seedance_media(
            ModelCaps(
                durations=_SEEDANCE_DURATIONS,
                aspect_ratios=_SEEDANCE_RATIOS,
                resolutions=_SEEDANCE_RES,
                first_frame=False,
                max_reference_images=9,  # [D §1.4]
                max_reference_videos=3,  # [D §1.4]
                max_reference_audio=3,  # [D §1.4]
                audio=True,
            )
        ),
        audio_configurable=True,
        face_consent=True,
        model_type="image-to-video",  # R2V reports image-to-video [C §1.9]
    ),
    "seedance-1-5-pro-image-to-video-basic": VeniceModel(  # constraints verbatim [C §1.9]
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
    "grok-imagine-text-to-video-private": VeniceModel(_GROK, private=True),  # id [D §1.4]
    "grok-imagine-image-to-video-private": VeniceModel(  # id [D §1.4]; caps [I]
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
    "grok-imagine-reference-to-video-private": VeniceModel(  # id [D §1.4]; caps [I]
        ModelCaps(
            durations=_GROK.durations,
            aspect_ratios=_GROK.aspect_ratios,
            resolutions=_GROK.resolutions,
            first_frame=False,
            max_reference_images=4,  # [I]
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
#: Models whose queue answer carries a one-time ``download_url`` [D §1.4].
PRIVATE_MODELS = frozenset(k for k, v in _TABLE.items() if v.private)
