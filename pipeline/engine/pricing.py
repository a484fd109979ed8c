"""The one home of a shot's price before it is paid: ``pipeline plan`` and the spend guard agree.

A shot is priced from the first of these that gives a figure:

1. the provider's free quote (Venice ``POST /video/quote``), when the caller can ask for one;
2. nothing, for a free provider (the offline ``local`` renderer): $0;
3. the provider's published credits (seedance2.ink) x ``providers.<name>.usd_per_credit``;
4. the manifest's price table ``providers.<name>.prices`` for the model (per second, per job);
5. otherwise the price is *unknown* (credits alone, without a rate, still say how many credits):
   never counted as $0, and with a budget such a shot cannot be proved to fit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.errors import ProviderError
from pipeline.models import Shot
from pipeline.providers.base import ProviderSpec
from pipeline.settings import ProviderSettings

log = logging.getLogger("pipeline")

#: Where an estimate came from (``Estimate.source``).
QUOTE, FREE, CREDITS, PRICE_TABLE, UNKNOWN = (
    "quote",
    "free (offline)",
    "credits",
    "price table",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A shot's price before it is paid.

    Attributes:
        usd: the price in USD, or None when unknown.
        credits: the provider's credits for the shot, when it prices in credits.
        source: one of ``quote``, ``free (offline)``, ``credits``, ``price table``, ``unknown``.
    """

    usd: float | None
    credits: float | None = None
    source: str = UNKNOWN


def static_estimate(shot: Shot, spec: ProviderSpec, settings: ProviderSettings) -> Estimate:
    """The price of ``shot`` from what is known offline (steps 2-5 of the module docstring).

    Args:
        shot: the expanded shot (its model and duration in seconds).
        spec: its provider's static facts (free? credit table?).
        settings: the provider's merged settings (``usd_per_credit``, ``prices``).
    """
    if spec.free:
        return Estimate(0.0, source=FREE)
    credits = spec.credits(shot) if spec.credits is not None else None
    if credits is not None and settings.usd_per_credit is not None:
        return Estimate(credits * settings.usd_per_credit, credits, CREDITS)
    price = settings.prices.get(shot.model)
    if price is not None:
        return Estimate(price.usd(shot.duration), credits, PRICE_TABLE)
    return Estimate(None, credits, CREDITS if credits is not None else UNKNOWN)


async def estimate(
    shot: Shot,
    spec: ProviderSpec,
    settings: ProviderSettings,
    quote: Callable[[], Awaitable[float]] | None = None,
) -> Estimate:
    """The price of ``shot``: the provider's quote when it answers, else the offline price.

    Args:
        shot: the expanded shot.
        spec: its provider's static facts.
        settings: the provider's merged settings.
        quote: asks the provider for a free quote in USD (None: no quote endpoint or no key).

    Returns:
        The estimate. A failed quote is logged and falls back to the offline price: a quote is
        never required to run.
    """
    if quote is not None:
        try:
            usd = await quote()
        except ProviderError as exc:
            log.warning("%s: no quote (%s); priced offline", shot.id, exc)
        else:
            credits = spec.credits(shot) if spec.credits is not None else None
            return Estimate(usd, credits, QUOTE)
    return static_estimate(shot, spec, settings)
