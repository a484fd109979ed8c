"""Provider registry: a closed, read-only mapping from manifest name to :class:`ProviderSpec`.

There are no entry points or string imports: every adapter lives in this package. A provider's
spec module (its models, defaults and offline checks) is imported the first time its spec is
looked up, and its adapter module only when a run builds the adapter, so ``pipeline status``
loads no provider at all, ``pipeline validate`` no HTTP client, and no command a renderer or
codec it does not use; :data:`KEY_VARIABLES` is known without loading any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.providers.base import ProviderSpec


def _local() -> ProviderSpec:
    from pipeline.providers.local.adapter import SPEC

    return SPEC


def _venice() -> ProviderSpec:
    from pipeline.providers.venice.spec import SPEC

    return SPEC


def _seedance2() -> ProviderSpec:
    from pipeline.providers.seedance2.spec import SPEC

    return SPEC


def _newapi() -> ProviderSpec:
    from pipeline.providers.newapi.spec import SPEC

    return SPEC


def _relaydance() -> ProviderSpec:
    from pipeline.providers.relaydance.spec import SPEC

    return SPEC


#: Provider name -> how to get its spec (imports its spec module on first use).
_LOADERS: Mapping[str, Callable[[], ProviderSpec]] = MappingProxyType(
    {
        "local": _local,
        "venice": _venice,
        "seedance2": _seedance2,
        "newapi": _newapi,
        "relaydance": _relaydance,
    }
)

#: Provider name -> the variable its API key is read from by default (its spec's
#: ``defaults.api_key_env``; ``tests/test_cli_imports.py`` checks they agree), known without
#: importing any adapter so that every command, ``status`` too, can mask the keys it can see.
KEY_VARIABLES: Mapping[str, str | None] = MappingProxyType(
    {
        "local": None,
        "venice": "VENICE_API_KEY",
        "seedance2": "SEEDANCE2_API_KEY",
        "newapi": "NEWAPI_API_KEY",
        "relaydance": "RELAYDANCE_API_KEY",
    }
)


class Registry(Mapping[str, "ProviderSpec"]):
    """The read-only ``{name: ProviderSpec}`` of the built-in adapters, each loaded on lookup.

    Iterating yields the names without importing anything; ``registry[name]`` (and ``.get``,
    ``.values()``, ``.items()``) imports that provider's spec module once (Python caches it).
    """

    def __getitem__(self, name: str) -> ProviderSpec:
        return _LOADERS[name]()

    def __contains__(self, name: object) -> bool:  # without loading the adapter
        return name in _LOADERS

    def __iter__(self) -> Iterator[str]:
        return iter(_LOADERS)

    def __len__(self) -> int:
        return len(_LOADERS)

    def __repr__(self) -> str:
        return f"Registry({', '.join(_LOADERS)})"


PROVIDERS: Mapping[str, ProviderSpec] = Registry()


def __getattr__(name: str) -> Any:
    """``ProviderSpec`` on first use (PEP 562): it is defined in :mod:`pipeline.providers.base`."""
    if name == "ProviderSpec":
        from pipeline.providers.base import ProviderSpec

        return ProviderSpec
    raise AttributeError(f"module 'pipeline.providers' has no attribute {name!r}")


__all__ = ["KEY_VARIABLES", "PROVIDERS", "ProviderSpec", "Registry"]
