"""Provider registry: a closed, read-only mapping from manifest name to :class:`ProviderSpec`.

There are no entry points or string imports: every adapter lives in this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pipeline.providers.base import ProviderSpec
from pipeline.providers.local.adapter import SPEC as LOCAL
from pipeline.providers.newapi.adapter import SPEC as NEWAPI
from pipeline.providers.relaydance.adapter import SPEC as RELAYDANCE
from pipeline.providers.seedance2.adapter import SPEC as SEEDANCE2
from pipeline.providers.venice.adapter import SPEC as VENICE

PROVIDERS: Mapping[str, ProviderSpec] = MappingProxyType(
    {spec.name: spec for spec in (LOCAL, VENICE, SEEDANCE2, NEWAPI, RELAYDANCE)}
)

__all__ = ["PROVIDERS", "ProviderSpec"]
