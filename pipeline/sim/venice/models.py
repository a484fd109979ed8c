"""The Venice simulator's own model table (:mod:`pipeline.sim.venice.app`).

Written from Venice's documentation, independently of the adapter's table, so that the
simulator can catch an adapter that sends what Venice would refuse:

- queue request fields and enums: https://docs.venice.ai/api-reference/endpoint/video/queue
  (prompt "default 2500 characters, up to 10000 for some models such as Seedance 2.0";
  reference arrays at most 9 images / 3 videos / 3 audio; ``audio`` defaults to true;
  ``upscale_factor`` 1, 2 or 4, default 2, for upscale models only);
- the Seedance 2.0 family (``seedance-2-0-*`` text-, image- and reference-to-video, plus the
  ``-fast-`` variants: 480p / 720p / 1080p, fast 480p / 720p):
  https://docs.venice.ai/guides/media/seedance-2-0 and https://docs.venice.ai/models/seedance-2-0
  (4-15 s clips, the ``-basic`` ids up to 4K);
- the face-consent ids (image- and reference-to-video, not in the public model list):
  https://docs.venice.ai/guides/media/seedance-face-consent ;
- the ``/models`` constraints shape: https://docs.venice.ai/api-reference/endpoint/models/list .

Values the documentation does not give are marked [inferred] (the simulator's choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

#: Prompt and negative prompt cap when a model documents none.
DEFAULT_PROMPT_LIMIT = 2500
#: The Seedance 2.0 cap ("up to 10000 for some models such as Seedance 2.0").
SEEDANCE_PROMPT_LIMIT = 10000
#: A JSON body above 35 MB is refused with 413 (MB read as MiB [inferred]).
MAX_BODY_BYTES = 35 * 1024 * 1024
#: ``consents`` key of the Seedance flow and its three attestations, all ``true``.
SEEDANCE_CONSENT = "seedance"
CONSENT_FIELDS = (
    "confirmed_terms_and_privacy",
    "confirmed_legal_right",
    "confirmed_screening_acknowledged",
)
#: ``upscale_factor`` values (default 2).
UPSCALE_FACTORS = (1, 2, 4)


def seconds(low: int, high: int) -> tuple[str, ...]:
    """The duration enum values ``"<low>s"`` .. ``"<high>s"``."""
    return tuple(f"{n}s" for n in range(low, high + 1))


@dataclass(frozen=True, slots=True)
class SimModel:
    """What one Venice video model accepts, as the simulator enforces it.

    Attributes:
        name: display name in ``/models``.
        model_type: ``text-to-video``, ``image-to-video`` (also reference-to-video) or ``video``.
        durations: the ``duration`` values it takes (``"5s"``...).
        aspect_ratios: ``aspect_ratio`` values; empty: the field is refused.
        resolutions: ``resolution`` values; empty: the field is refused.
        audio: the output has sound.
        audio_configurable: the request may carry ``audio``.
        prompt_limit: the prompt and negative prompt cap in characters.
        media: the single-URL media fields it takes (``image_url``, ``end_image_url``,
            ``video_url``, ``audio_url``).
        required: fields a request must carry besides model, prompt and duration.
        ref_images / ref_videos / ref_audio: the most ``reference_*_urls`` it takes.
        private: a private model: the queue answer adds a one-time ``download_url``.
        face_consent: faces in its media need the Seedance consent (409 needs_consent).
        listed: it appears in ``GET /models``.
        image_limits: ``/models`` shows the reference image limits (300 px, 0.4-2.5).
    """

    name: str
    model_type: str
    durations: tuple[str, ...]
    aspect_ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    audio: bool = True
    audio_configurable: bool = True
    prompt_limit: int = DEFAULT_PROMPT_LIMIT
    media: frozenset[str] = frozenset()
    required: tuple[str, ...] = ()
    ref_images: int = 0
    ref_videos: int = 0
    ref_audio: int = 0
    private: bool = False
    face_consent: bool = False
    listed: bool = True
    image_limits: bool = False


_FRAMES = frozenset({"image_url", "end_image_url"})
# Seedance 2.0 ratios: the queue enum minus 2:3 / 3:2 [inferred].
_SEEDANCE_RATIOS = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")


def _seedance(name: str, resolutions: tuple[str, ...]) -> dict[str, SimModel]:
    """The text-, image- and reference-to-video models of one Seedance 2.0 tier (``-basic``)."""
    t2v = SimModel(
        name=name,
        model_type="text-to-video",
        durations=seconds(4, 15),
        aspect_ratios=_SEEDANCE_RATIOS,
        resolutions=resolutions,
        prompt_limit=SEEDANCE_PROMPT_LIMIT,
    )
    # Image-to-video: the frame decides the ratio ("Some models do not support aspect_ratio").
    i2v = replace(
        t2v,
        model_type="image-to-video",
        aspect_ratios=(),
        media=_FRAMES,
        required=("image_url",),
        image_limits=True,
    )
    r2v = replace(
        t2v, model_type="image-to-video", ref_images=9, ref_videos=3, ref_audio=3, image_limits=True
    )
    return {"text-to-video": t2v, "image-to-video": i2v, "reference-to-video": r2v}


def _table() -> dict[str, SimModel]:
    table: dict[str, SimModel] = {}
    wan = SimModel(  # https://docs.venice.ai/models/wan-2-7-video [inferred: beyond the id]
        name="Wan 2.7",
        model_type="text-to-video",
        durations=("5s", "10s", "15s"),
        aspect_ratios=("16:9", "9:16", "1:1"),
        resolutions=("720p", "1080p"),
    )
    table["wan-2-7-text-to-video"] = wan
    table["wan-2-7-image-to-video"] = replace(  # [inferred]
        wan, model_type="image-to-video", aspect_ratios=(), media=_FRAMES - {"end_image_url"},
        required=("image_url",),
    )  # fmt: skip
    standard, fast = ("480p", "720p", "1080p"), ("480p", "720p")
    for prefix, name, res in (
        ("seedance-2-0", "Seedance 2.0", standard),
        ("seedance-2-0-fast", "Seedance 2.0 Fast", fast),
    ):
        for mode, model in _seedance(name, res).items():
            # Unlisted ids: image/reference ask for face consent.
            consent = mode != "text-to-video"
            table[f"{prefix}-{mode}"] = replace(model, face_consent=consent, listed=not consent)
            basic_res = (
                (*res, "4k") if prefix == "seedance-2-0" and mode == "text-to-video" else res
            )
            table[f"{prefix}-{mode}-basic"] = replace(model, resolutions=basic_res)
    table["seedance-1-5-pro-image-to-video-basic"] = SimModel(  # the /models capture
        name="Seedance 1.5 Pro",
        model_type="image-to-video",
        durations=("4s", "5s", "6s"),
        resolutions=("1080p", "720p", "480p"),
        prompt_limit=3500,
        media=frozenset({"image_url"}),
        required=("image_url",),
        image_limits=True,
    )
    # Grok Imagine private models (text / image / reference / video-to-video): a one-time
    # download_url, sound always on [inferred], 1-15 s and 480p / 720p [inferred].
    grok = SimModel(
        name="Grok Imagine",
        model_type="text-to-video",
        durations=seconds(1, 15),
        aspect_ratios=("16:9", "9:16", "1:1"),
        resolutions=("480p", "720p"),
        audio_configurable=False,
        private=True,
    )
    table["grok-imagine-text-to-video-private"] = grok
    table["grok-imagine-image-to-video-private"] = replace(
        grok, model_type="image-to-video", aspect_ratios=(), media=frozenset({"image_url"}),
        required=("image_url",),
    )  # fmt: skip
    table["grok-imagine-reference-to-video-private"] = replace(
        grok, model_type="image-to-video", ref_images=4
    )
    table["grok-imagine-video-to-video-private"] = replace(
        grok, model_type="video", aspect_ratios=(), media=frozenset({"video_url"}),
        required=("video_url",),
    )  # fmt: skip
    return table


#: Every model the simulator serves, by id (read-only).
SIM_MODELS: Mapping[str, SimModel] = MappingProxyType(_table())
