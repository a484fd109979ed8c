"""``venice``'s offline facts: models, defaults and checks (``pipeline validate``).

They live apart from the adapter (:mod:`pipeline.providers.venice.adapter`) so that validating
a manifest imports no HTTP client; the spec's factory imports the adapter when a run builds it.
"""

from __future__ import annotations

from pipeline.models import MediaRole, ModelCaps, Shot
from pipeline.providers.base import MediaPolicy, Provider, ProviderContext, ProviderSpec
from pipeline.providers.venice.codec import DEFAULT_BASE_URL, MAX_INLINE_BYTES, MODELS, NAME
from pipeline.settings import ProviderSettings


def _factory(ctx: ProviderContext) -> Provider:
    """The adapter for a run (imports it: aiohttp and the I/O shell)."""
    from pipeline.providers.venice.adapter import VeniceProvider

    return VeniceProvider(ctx)


def _check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    """Rules :class:`ModelCaps` cannot express.

    Reference audio must be paired with at least one reference image or video [venice.md §1.4].
    """
    roles = {ref.role for ref in shot.references}
    if MediaRole.REFERENCE_AUDIO in roles and not roles & {
        MediaRole.REFERENCE_IMAGE,
        MediaRole.REFERENCE_VIDEO,
    }:
        return [("references", "Venice needs at least one reference image or video with audio")]
    return []


SPEC = ProviderSpec(
    name=NAME,
    factory=_factory,
    models=MODELS,
    defaults=ProviderSettings(
        base_url=DEFAULT_BASE_URL,  # [venice.md §1.1]
        api_key_env="VENICE_API_KEY",
        max_in_flight=10,  # no documented job concurrency limit [inferred]
        requests_per_minute=40,  # video queue 40 req/min [venice.md §1.11]
        polls_per_minute=120,  # video retrieve 120 req/min [venice.md §1.11]
        poll_min_s=5.0,  # [inferred] jobs take minutes (average_execution_time ~145 s in §1.6)
        poll_max_s=30.0,  # [inferred]
        poll_deadline_s=3600.0,  # [inferred]
    ),
    # data: URLs for image/end frames [venice.md §1.4], audio/video [venice.md §1.4 audio_url,
    # video_url];
    # for the reference arrays the spec says "URL" only: data URLs assumed there too [inferred].
    media=MediaPolicy(data_urls=True, max_inline_bytes=MAX_INLINE_BYTES),
    needs_api_key=True,
    check=_check,
    default_model="wan-2-7-text-to-video",
)
