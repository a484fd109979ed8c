"""Endpoints and key variables belong to the user, not to the manifest.

A manifest is often written by someone else. Obeying its ``providers.<name>.base_url``,
``providers.<name>.api_key_env`` and ``storage.endpoint_url`` blindly would send your API keys
(or any variable it names) and your media to whatever host it chose. So a run uses, for each
provider it needs:

1. the base URL in ``PIPELINE_<PROVIDER>_BASE_URL`` (``PIPELINE_STORAGE_ENDPOINT_URL`` for the
   object store), else
2. the user's config file (:func:`config_path`), ``[providers.<name>]`` ``base_url`` and
   ``api_key_env``, ``[storage]`` ``endpoint_url``, else
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
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pipeline.errors import ManifestError, ManifestIssue
from pipeline.manifest.loader import Manifest
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderSpec
from pipeline.settings import ProviderSettings, api_url, key_variable

#: Where the config file is looked for when ``PIPELINE_CONFIG`` is not set.
CONFIG_NAME = Path("pipeline") / "config.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserProvider(_Strict):
    """``[providers.<name>]`` of the config file: where that provider's API is, which variable."""

    base_url: str | None = None
    api_key_env: str | None = None

    check_base_url = field_validator("base_url")(api_url)
    check_api_key_env = field_validator("api_key_env")(key_variable)


class UserStorage(_Strict):
    """``[storage]`` of the config file: the object store's endpoint."""

    endpoint_url: str | None = None

    check_endpoint_url = field_validator("endpoint_url")(api_url)


class _ConfigFile(_Strict):
    """The config file's schema: ``[providers.<name>]`` tables and a ``[storage]`` table."""

    providers: dict[str, UserProvider] = {}
    storage: UserStorage = UserStorage()


@dataclass(frozen=True)
class UserConfig:
    """The user's own endpoint settings (config file and ``PIPELINE_*`` variables merged).

    Attributes:
        providers: provider name -> its settings.
        storage: the object store's endpoint.
        file: the config file's path (where it is, or would be looked for).
        source: where the settings came from, for messages (file path and/or variables).
    """

    providers: Mapping[str, UserProvider] = field(default_factory=dict)
    storage: UserStorage = field(default_factory=UserStorage)
    file: str = ""
    source: str = "no config file"


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the user's config file is: the first that is set of the three below.

    ``PIPELINE_CONFIG``, ``$XDG_CONFIG_HOME/pipeline/config.toml``,
    ``~/.config/pipeline/config.toml``.
    """
    if environ.get("PIPELINE_CONFIG"):
        return Path(environ["PIPELINE_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / CONFIG_NAME


def env_variable(provider: str) -> str:
    """``PIPELINE_<PROVIDER>_BASE_URL``: the variable that sets ``provider``'s base URL."""
    return f"PIPELINE_{provider.upper()}_BASE_URL"


STORAGE_VARIABLE = "PIPELINE_STORAGE_ENDPOINT_URL"


def load_user_config(
    environ: Mapping[str, str] | None = None, registry: Mapping[str, ProviderSpec] = PROVIDERS
) -> UserConfig:
    """Read the user's config file (a missing default file is no error) and ``PIPELINE_*``.

    Args:
        environ: the environment (default ``os.environ``).
        registry: provider specs by name; ``[providers.<name>]`` must name one of them.

    Returns:
        The merged settings; a ``PIPELINE_<PROVIDER>_BASE_URL`` wins over the file.

    Raises:
        ManifestError: the file cannot be read, is not TOML (with its line and column), has an
            unknown table or key, or a value that is not allowed (naming the line and field);
            ``PIPELINE_CONFIG`` names a file that does not exist; a variable is not a URL.
    """
    env = os.environ if environ is None else environ
    path = config_path(env)
    data: dict[str, object] = {}
    text = ""
    sources = []
    if path.is_file() or env.get("PIPELINE_CONFIG"):
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            raise ManifestError.single(
                str(path), None, "", "no such file (PIPELINE_CONFIG)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError.single(str(path), None, "", f"cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError.single(str(path), None, "", f"not TOML: {exc}") from None
        sources.append(str(path))
    try:
        config = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            [
                ManifestIssue(
                    str(path), _toml_line(text, err["loc"]), _dotted(err["loc"]), err["msg"]
                )
                for err in exc.errors()
            ]
        ) from None
    unknown = sorted(set(config.providers) - set(registry))
    if unknown:
        raise ManifestError.single(
            str(path),
            _toml_line(text, ("providers", unknown[0])),
            f"providers.{unknown[0]}",
            f"unknown provider; known: {', '.join(registry)}",
        )
    providers = dict(config.providers)
    for name in registry:
        url = env.get(env_variable(name))
        if url:
            providers[name] = _from_env(env_variable(name), providers.get(name), url)
            sources.append(env_variable(name))
    storage = config.storage
    if env.get(STORAGE_VARIABLE):
        storage = _storage_from_env(env[STORAGE_VARIABLE])
        sources.append(STORAGE_VARIABLE)
    return UserConfig(
        providers=providers,
        storage=storage,
        file=str(path),
        source=", ".join(sources) or "no config file",
    )


def _from_env(variable: str, current: UserProvider | None, url: str) -> UserProvider:
    try:
        return (current or UserProvider()).model_copy(update={"base_url": api_url(url)})
    except ValueError as exc:
        raise ManifestError.single(variable, None, "", f"{url!r}: {exc}") from None


def _storage_from_env(url: str) -> UserStorage:
    try:
        return UserStorage(endpoint_url=api_url(url))
    except ValueError as exc:
        raise ManifestError.single(STORAGE_VARIABLE, None, "", f"{url!r}: {exc}") from None


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _toml_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The line of ``loc`` (``("providers", "newapi", "base_url")``) in TOML ``text``, if found.

    tomllib keeps no positions: ``loc`` is looked for as a table header, else as a key after
    its table's header (else that header's line).
    """
    parts = [str(part) for part in loc]
    lines = text.splitlines()

    def header(names: list[str]) -> int | None:
        pattern = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, names)) + r"\s*\]")
        return next((i for i, line in enumerate(lines) if pattern.match(line)), None)

    whole = header(parts) if parts else None
    if whole is not None:
        return whole + 1
    *table, key = parts or [""]
    start = header(table) if table else 0
    if start is None:
        return None
    assignment = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    found = next((i for i in range(start, len(lines)) if assignment.match(lines[i])), None)
    if found is not None:
        return found + 1
    return start + 1 if table else None


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
) -> Resolution:
    """Decide the base URL, key variable and storage endpoint each provider of ``manifest`` uses.

    Args:
        manifest: the loaded manifest (only providers its shots use are considered).
        user: the user's settings (:func:`load_user_config`).
        trust: ``--trust-endpoints``: the manifest's values are confirmed.
        providers: False when the provider endpoints are not used (``--simulate`` points every
            provider at its simulator with the simulator's key); the storage is still checked.
        registry: provider specs by name.

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
    storage = manifest.storage
    if storage is not None:
        endpoint, refused = _choose(storage.endpoint_url, user.storage.endpoint_url, None, trust)
        if refused:
            path = "storage.endpoint_url"
            unconfirmed.append(
                Request(
                    path,
                    storage.endpoint_url or "",
                    manifest.setting_lines.get(path),
                    user.storage.endpoint_url,
                )
            )
        storage = storage.model_copy(update={"endpoint_url": endpoint})
    return Resolution(replace(manifest, providers=settings, storage=storage), tuple(unconfirmed))


def check(
    manifest: Manifest,
    user: UserConfig,
    *,
    trust: bool = False,
    providers: bool = True,
    command: str = "run",
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
) -> Manifest:
    """:func:`resolve`, then refuse to go on when the manifest asks for anything unconfirmed.

    Returns:
        The manifest to run (every endpoint setting the one the user chose or confirmed).

    Raises:
        ManifestError: one issue per unconfirmed host or variable (file, line, field, what it
            asks for and what the user's config says), then how to confirm them; exit 2.
    """
    found = resolve(manifest, user, trust=trust, providers=providers, registry=registry)
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
