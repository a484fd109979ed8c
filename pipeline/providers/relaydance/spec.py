"""``relaydance``'s offline facts: models, defaults and checks (``pipeline validate``).

They live apart from the adapter (:mod:`pipeline.providers.relaydance.adapter`) so that
validating a manifest imports no HTTP client; the spec's factory imports the adapter when a run
builds it.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from pipeline.models import MediaRole, ModelCaps, Shot
from pipeline.providers.base import MediaPolicy, Provider, ProviderContext, ProviderSpec
from pipeline.providers.relaydance.codec import CORE_METADATA, DEFAULTS, NAME, baked_resolution

#: Largest total of inline data URLs per request (bytes) [I: gateways cap JSON near 10-20 MB].
MAX_DATA_URL_BYTES = 10 * 1024 * 1024


def _factory(ctx: ProviderContext) -> Provider:
    """The adapter for a run (imports it: aiohttp and the I/O shell)."""
    from pipeline.providers.relaydance.adapter import RelayDanceProvider

    return RelayDanceProvider(ctx)


def _caps(*, audio: bool, seconds: int = 12, resolutions: tuple[str, ...] = ()) -> ModelCaps:
    return ModelCaps(
        # 4-12 s [relaydance.md §4.2 client lists]; Seedance 2.0 takes 4-15 s, the FAQ's overall
        # cap, as on
        # every other provider (https://docs.venice.ai/models/seedance-2-0)
        durations=tuple(range(4, seconds + 1)),
        # metadata.ratio "16:9", "9:16", "1:1"; the documented reference example sends "1:1"
        # with seedance-1-5-pro-with-audio (https://relaydance.com/docs/api-reference/generate-video)
        aspect_ratios=("16:9", "9:16", "1:1"),
        resolutions=resolutions or ("480p", "720p", "1080p"),  # baked ids checked by _check
        max_prompt_chars=5000,  # [inferred] not documented; the gateway answers 400 (not charged)
        first_frame=True,  # role first_frame [relaydance.md §4.2]
        end_frame=True,  # role last_frame [relaydance.md §4.2]
        max_reference_images=9,  # [relaydance.md §4.2]
        max_reference_videos=3,  # [relaydance.md §4.2]
        max_reference_audio=3,  # [relaydance.md §4.2]
        # generate_audio on Seedance 2.0 [relaydance.md §4.2]; 1.5 audio is in the id [seen in code]
        audio=audio,
    )


MODELS: dict[str, ModelCaps] = {
    "doubao-seedance-2-0-720p": _caps(audio=True, seconds=15),
    "doubao-seedance-2-0-1080p": _caps(audio=True, seconds=15),
    # Seedance 2.0 Fast renders 480p/720p (https://docs.venice.ai/models/seedance-2-0)
    "doubao-seedance-2-0-fast-260128": _caps(audio=True, seconds=15, resolutions=("480p", "720p")),
    "seedance-1-5-pro-with-audio": _caps(audio=True),
    "seedance-1-5-pro-no-audio": _caps(audio=False),
}

_CITED = re.compile(r"@image(\d+)")


def _check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    """RelayDance rules :class:`ModelCaps` cannot express (``pipeline validate``)."""
    issues: list[tuple[str, str]] = []
    ref_images = [a for a in shot.references if a.role == MediaRole.REFERENCE_IMAGE]
    if ref_images and (shot.image is not None or shot.end_image is not None):
        issues.append(
            (
                "references",
                "reference images cannot be combined with first/last-frame images "
                "[relaydance.md §4.2]",
            )
        )
    baked = baked_resolution(shot.model)
    if baked and shot.resolution and shot.resolution != baked:
        issues.append(
            ("resolution", f"{shot.model} renders {baked} only; pick the model id for the other")
        )
    clash = sorted(CORE_METADATA.intersection(shot.extra))
    if clash:
        issues.append(("extra", f"{', '.join(clash)} come from shot fields; remove from extra"))
    cited = [int(n) for n in _CITED.findall(shot.prompt)]
    if cited and max(cited) > len(ref_images):
        issues.append(
            ("prompt", f"cites @image{max(cited)} but the shot has {len(ref_images)} references")
        )
    return issues


SPEC = ProviderSpec(
    name=NAME,
    factory=_factory,
    models=MappingProxyType(MODELS),
    defaults=DEFAULTS,
    # Local images inline as data URLs [I: OpenAI-style image_url accepts them]; video/audio
    # and larger requests go through object storage as presigned https URLs.
    media=MediaPolicy(data_urls=True, max_inline_bytes=MAX_DATA_URL_BYTES, inline_kinds=("image",)),
    needs_api_key=True,
    check=_check,
    default_model="doubao-seedance-2-0-720p",
)
