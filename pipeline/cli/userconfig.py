"""The user's own choice of endpoints and key variables: the config file and ``PIPELINE_*``.

The config file (:func:`config_path`) is TOML::

    [providers.newapi]
    base_url = "https://gateway.example.com"
    api_key_env = "STUDIO_NEWAPI_API_KEY"

    [storage]
    endpoint_url = "http://127.0.0.1:9000"

``PIPELINE_<PROVIDER>_BASE_URL`` and ``PIPELINE_STORAGE_ENDPOINT_URL`` win over it.
:mod:`pipeline.cli.endpoints` decides, from these, what a manifest may use.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pipeline.errors import ManifestError, ManifestIssue
from pipeline.providers import PROVIDERS
from pipeline.settings import api_url, key_variable

if TYPE_CHECKING:
    from pipeline.providers.base import ProviderSpec

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
