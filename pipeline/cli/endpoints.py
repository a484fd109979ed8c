"""Endpoints and key variables belong to the user, not to the manifest.

A manifest is often written by someone else. Obeying its ``providers.<name>.base_url``,
``providers.<name>.api_key_env`` and ``storage.endpoint_url`` blindly would send your API keys
(or any variable it names) and your media to whatever host it chose. So a run uses, for each
provider it needs:

1. the base URL in ``PIPELINE_<PROVIDER>_BASE_URL`` (``PIPELINE_STORAGE_ENDPOINT_URL`` for the
   object store), else
2. the user's config file (:func:`~pipeline.cli.userconfig.config_path`),
   ``[providers.<name>]`` ``base_url`` and ``api_key_env``, ``[storage]`` ``endpoint_url``, else
3. the adapter's documented default (the provider's official API and ``<PROVIDER>_API_KEY``).

A value the manifest sets is obeyed only when the user confirms it: the same value in (1) or
(2), or ``--trust-endpoints`` on the command line. Otherwise :func:`resolve` raises a
:class:`~pipeline.errors.ManifestError` listing every host and variable the manifest asks for,
each with its line, and the command stops before any request (exit 2). A manifest value equal
to the adapter's default asks for nothing new and needs no confirmation.

The config file is TOML::

    [providers.newapi]
    base_url = "https://gateway.example.com"
    api_key_env = "STUDIO_NEWAPI_API_KEY"

    [storage]
    endpoint_url = "http://127.0.0.1:9000"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.cli.userconfig import (
    UserConfig,
    UserProvider,
    load_user_config,
)
from pipeline.errors import ManifestError, ManifestIssue
from pipeline.providers import PROVIDERS
from pipeline.settings import ProviderSettings

if TYPE_CHECKING:
    import argparse

    from pipeline.manifest.loader import Manifest
    from pipeline.providers.base import ProviderSpec


@dataclass(frozen=True)
class Request:
    """One endpoint setting a manifest sets and the user has not confirmed.

    Attributes:
        field: the manifest field (``providers.relaydance.base_url``).
        value: what the manifest asks for (a URL or a variable name; never a secret).
        line: its line in the manifest, when known.
        user_value: what the user's config says instead, or None.
    """

    field: str
    value: str
    line: int | None
    user_value: str | None = None


@dataclass(frozen=True)
class Resolution:
    """What :func:`resolve` decided.

    Attributes:
        manifest: the manifest with every endpoint setting replaced by the one to use.
        unconfirmed: the manifest's requests the user did not confirm (empty when it may run).
    """

    manifest: Manifest
    unconfirmed: tuple[Request, ...] = ()


def _same(a: str | None, b: str | None) -> bool:
    """Equal URLs or names, ignoring a trailing slash and the case of scheme and host."""
    if a is None or b is None:
        return False
    return _normal(a) == _normal(b)


def _normal(value: str) -> str:
    parts = urlsplit(value.strip())
    if not parts.scheme:
        return value.strip()
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _choose(
    asked: str | None, user: str | None, default: str | None, trust: bool
) -> tuple[str | None, bool]:
    """(the value to use, whether the manifest's ``asked`` is unconfirmed)."""
    if asked is None or (_same(asked, default) and not trust):
        return (user or default), False
    if trust or _same(asked, user):
        return asked, False
    return (user or default), True


def resolve(
    manifest: Manifest,
    user: UserConfig,
    *,
    trust: bool = False,
    providers: bool = True,
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
    storage: bool = True,
) -> Resolution:
    """Decide the base URL, key variable and storage endpoint each provider of ``manifest`` uses.

    Args:
        manifest: the loaded manifest (only providers its shots use are considered).
        user: the user's settings (:func:`load_user_config`).
        trust: ``--trust-endpoints``: the manifest's values are confirmed.
        providers: False when the provider endpoints are not used (``--simulate`` points every
            provider at its simulator with the simulator's key).
        registry: provider specs by name.
        storage: False when the storage endpoint is not used (``--simulate`` uploads to the
            simulated store): the manifest's is then neither checked nor changed.

    Returns:
        The manifest to run, and the requests left unconfirmed (see :func:`check`).
    """
    unconfirmed: list[Request] = []
    settings = dict(manifest.providers)
    for name in sorted({s.provider for s in manifest.shots}) if providers else ():
        spec = registry[name]
        asked = manifest.providers.get(name, ProviderSettings())
        mine = user.providers.get(name, UserProvider())
        update: dict[str, str | None] = {}
        for key in ("base_url", "api_key_env"):
            value, refused = _choose(
                getattr(asked, key), getattr(mine, key), getattr(spec.defaults, key), trust
            )
            update[key] = value
            if refused:
                path = f"providers.{name}.{key}"
                unconfirmed.append(
                    Request(
                        path,
                        getattr(asked, key),
                        manifest.setting_lines.get(path),
                        getattr(mine, key),
                    )
                )
        settings[name] = asked.model_copy(update=update)
    store = manifest.storage
    if store is not None and storage:
        endpoint, refused = _choose(store.endpoint_url, user.storage.endpoint_url, None, trust)
        if refused:
            path = "storage.endpoint_url"
            unconfirmed.append(
                Request(
                    path,
                    store.endpoint_url or "",
                    manifest.setting_lines.get(path),
                    user.storage.endpoint_url,
                )
            )
        store = store.model_copy(update={"endpoint_url": endpoint})
    return Resolution(replace(manifest, providers=settings, storage=store), tuple(unconfirmed))


def check(
    manifest: Manifest,
    user: UserConfig,
    *,
    trust: bool = False,
    providers: bool = True,
    command: str = "run",
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
    storage: bool = True,
) -> Manifest:
    """:func:`resolve`, then refuse to go on when the manifest asks for anything unconfirmed.

    Returns:
        The manifest to run (every endpoint setting the one the user chose or confirmed).

    Raises:
        ManifestError: one issue per unconfirmed host or variable (file, line, field, what it
            asks for and what the user's config says), then how to confirm them; exit 2.
    """
    found = resolve(
        manifest, user, trust=trust, providers=providers, registry=registry, storage=storage
    )
    if not found.unconfirmed:
        return found.manifest
    file = str(manifest.path)
    issues = []
    for req in found.unconfirmed:
        if req.field.endswith("api_key_env"):
            what = f"asks to send the key in ${req.value}"
        else:
            host = urlsplit(req.value).netloc
            what = f"asks to send requests (with credentials) to {host} ({req.value})"
        yours = f"; your config says {req.user_value}" if req.user_value else ""
        issues.append(ManifestIssue(file, req.line, req.field, f"{what}{yours}"))
    issues.append(
        ManifestIssue(
            file,
            None,
            "",
            "stopped before any request: this manifest sets endpoints or key variables you "
            f"have not confirmed. If you trust them, run `pipeline {command} ... "
            f"--trust-endpoints`, or put the same values in {user.file or 'your config file'} "
            "(or PIPELINE_<PROVIDER>_BASE_URL, PIPELINE_STORAGE_ENDPOINT_URL)",
        )
    )
    raise ManifestError(issues)


def for_command(manifest: Manifest, args: argparse.Namespace) -> Manifest:
    """:func:`check` for a command line: the user's config and ``PIPELINE_*`` variables.

    ``args.trust_endpoints`` confirms the manifest's own values; with ``args.simulate`` no
    endpoint is used (the simulators and the simulated object store replace them all).

    Raises:
        ManifestError: as :func:`check` (exit 2, nothing sent).
    """
    simulate = getattr(args, "simulate", False)
    return check(
        manifest,
        load_user_config(os.environ),
        trust=args.trust_endpoints,
        providers=not simulate,
        command=args.command,
        storage=not simulate,
    )
