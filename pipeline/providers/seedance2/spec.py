"""``seedance2``'s offline facts: models, defaults and checks (``pipeline validate``).

They live apart from the adapter (:mod:`pipeline.providers.seedance2.adapter`) so that validating
a manifest imports no HTTP client; the spec's factory imports the adapter when a run builds it.
"""

from __future__ import annotations

from pipeline.providers.base import MediaPolicy, Provider, ProviderContext, ProviderSpec
from pipeline.providers.seedance2 import codec
from pipeline.settings import ProviderSettings

NAME = codec.NAME


def _factory(ctx: ProviderContext) -> Provider:
    """The adapter for a run (imports it: aiohttp and the I/O shell)."""
    from pipeline.providers.seedance2.adapter import Seedance2Provider

    return Seedance2Provider(ctx)


SPEC = ProviderSpec(
    name=NAME,
    factory=_factory,
    models=codec.MODELS,
    defaults=ProviderSettings(
        base_url=codec.DEFAULT_BASE_URL,  # [seedance2.md §2.1]
        api_key_env="SEEDANCE2_API_KEY",  # issue 3
        max_in_flight=4,  # [inferred] account concurrency not documented
        requests_per_minute=30,  # [inferred] rate limits not documented (§2.5)
        polls_per_minute=60,  # [inferred]
        poll_min_s=5.0,  # [inferred] no execution-time hint in the API
        poll_max_s=30.0,  # [inferred]
        poll_deadline_s=1800.0,  # [inferred] 30 minutes per task
    ),
    media=MediaPolicy(),  # public https URLs only, no data: URLs [seedance2.md §2.3, §2.6]: upload
    needs_api_key=True,  # Bearer sd2_live_<key> [seedance2.md §2.1]
    check=codec.check,
    credits=codec.estimate_credits,
    default_model=codec.DEFAULT_MODEL,
)
