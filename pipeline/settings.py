"""Typed settings from the manifest's top-level sections (``providers``, ``storage``, ...).

These are pydantic models (frozen, ``extra="forbid"``) so a typo in the YAML is an error with its
file and line, never a silently ignored key. Environment variables are *not* read here: the
manifest names the variable (``api_key_env``) and only ``pipeline.cli.main`` reads it, after
:mod:`pipeline.cli.endpoints` has checked that the user, not the manifest, chose it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _http_url(value: str | None) -> str | None:
    """``value`` when it is an http:// or https:// URL with a host (None passes)."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


#: Host names that are private by convention (RFC 6761, RFC 6762, RFC 8375, common LAN suffixes).
PRIVATE_SUFFIXES = (".localhost", ".local", ".lan", ".internal", ".home.arpa")


def is_private_host(host: str) -> bool:
    """Whether plain HTTP may be used with ``host``: a host on the user's machine or network.

    True for a loopback, private or link-local address, ``localhost``, a single-label name
    (``gateway``) or a name under :data:`PRIVATE_SUFFIXES`.
    """
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(PRIVATE_SUFFIXES)
    return ip.is_loopback or ip.is_private or ip.is_link_local


def api_url(value: str | None) -> str | None:
    """``value`` when it is an https:// URL, or an http:// URL to a private host (None passes).

    API keys travel in a header; over plain HTTP any network hop reads them, so plain HTTP is
    allowed only to a host on the user's own machine or network (:func:`is_private_host`).
    """
    checked = _http_url(value)
    if checked is None:
        return None
    parts = urlsplit(checked)
    if parts.scheme.lower() == "http" and not is_private_host(parts.hostname or ""):
        raise ValueError(
            "must be https:// (plain http:// only to a loopback or private host, e.g. "
            "http://127.0.0.1:8000 or http://gateway.lan): a key sent over http can be read "
            "on the way"
        )
    return checked


_KEY_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:_API_KEY|_TOKEN)$")


def key_variable(value: str | None) -> str | None:
    """``value`` when it names an environment variable ending in ``_API_KEY`` or ``_TOKEN``.

    So a manifest cannot have another secret (``AWS_SECRET_ACCESS_KEY``...) sent as an API key.
    """
    if value is not None and not _KEY_VARIABLE.match(value):
        raise ValueError(
            "must name an environment variable ending in _API_KEY or _TOKEN "
            "(e.g. RELAYDANCE_API_KEY): other variables may hold secrets that are not API keys"
        )
    return value


class Price(_Frozen):
    """A known price for one model: USD per second of video and/or per job."""

    per_second_usd: float | None = Field(default=None, ge=0)
    per_job_usd: float | None = Field(default=None, ge=0)

    def usd(self, duration_s: int) -> float:
        """The price of one job of ``duration_s`` seconds, in USD."""
        return (self.per_second_usd or 0.0) * duration_s + (self.per_job_usd or 0.0)


class ProviderSettings(_Frozen):
    """Per-provider settings (manifest ``providers.<name>``); unset fields take adapter defaults.

    Attributes:
        base_url: prefix the provider's documented paths are appended to.
        api_key_env: name of the environment variable holding the API key.
        max_in_flight: jobs submitted and not yet terminal at the provider (account concurrency).
        requests_per_minute: submit requests per minute (None: unlimited).
        polls_per_minute: poll requests per minute (None: unlimited).
        poll_min_s / poll_max_s: bounds of the poll interval in seconds (backoff with jitter).
        poll_deadline_s: longest a job may stay unfinished before the shot fails as timed out.
        max_uploads / max_downloads: concurrent media uploads / result downloads.
        latency_s: ``local`` only: simulated queue time added to every job, in seconds.
        breaker_threshold: consecutive server errors/timeouts that stop paid calls (default 5).
        breaker_cooldown_s: seconds paid calls stay stopped before a free probe (default 30).
        prices: known prices per model id (used where the provider has no quote endpoint).
        usd_per_credit: what one provider credit costs you (seedance2.ink sells credits).
        max_retry_after_s: longest ``Retry-After`` honoured, in seconds (default 600); a
            larger value is clamped to it (logged once per run and provider).
        connect_timeout_s: seconds to open a connection to the provider (default 10).
        read_timeout_s: longest wait for the next bytes of any answer or download (default 60).
        request_timeout_s: longest one API request may take, answer read included (default
            120); not applied to video downloads, which have a throughput floor instead.
        max_response_bytes: largest API answer (JSON of submit, poll...) read, in bytes
            (default 16 MiB); a larger one is refused unread (not video downloads).
    """

    base_url: str | None = None
    api_key_env: str | None = None
    max_in_flight: PositiveInt | None = None
    requests_per_minute: PositiveFloat | None = None
    polls_per_minute: PositiveFloat | None = None
    poll_min_s: PositiveFloat | None = None
    poll_max_s: PositiveFloat | None = None
    poll_deadline_s: PositiveFloat | None = None
    max_uploads: PositiveInt | None = None
    max_downloads: PositiveInt | None = None
    latency_s: float | None = Field(default=None, ge=0)
    breaker_threshold: PositiveInt | None = None
    breaker_cooldown_s: PositiveFloat | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    usd_per_credit: float | None = Field(default=None, ge=0)
    max_retry_after_s: float | None = Field(default=None, ge=0)
    connect_timeout_s: PositiveFloat | None = None
    read_timeout_s: PositiveFloat | None = None
    request_timeout_s: PositiveFloat | None = None
    max_response_bytes: PositiveInt | None = None

    check_base_url = field_validator("base_url")(api_url)
    check_api_key_env = field_validator("api_key_env")(key_variable)

    def merged(self, defaults: ProviderSettings) -> ProviderSettings:
        """Return these settings with every unset field taken from ``defaults``."""
        data = defaults.model_dump(exclude_none=True)
        data.update(self.model_dump(exclude_none=True, exclude_defaults=True))
        return ProviderSettings.model_validate(data)


class StorageSettings(_Frozen):
    """Object storage for uploads (manifest ``storage``). Credentials come from the environment."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    #: How long presigned URLs stay valid: a number with a unit s, m, h or d (``24h``).
    presign_ttl: str = Field(default="24h", pattern=r"^\s*\d+(?:\.\d+)?\s*[smhd]?\s*$")

    check_endpoint_url = field_validator("endpoint_url")(api_url)


class DownloadSettings(_Frozen):
    """Result download policy (manifest ``downloads``).

    Attributes:
        allow_hosts: private hosts (``host`` or ``host:port``) trusted for result downloads.
        max_bytes: size cap of one video in bytes (default 2 GiB).
        min_bytes_per_s: throughput floor of a download in bytes per second (default 64 KiB/s):
            a body slower than this over ``throughput_window_s`` is cut (a retryable failure).
        throughput_window_s: the window the floor is measured over, in seconds (default 30).
    """

    allow_hosts: tuple[str, ...] = ()
    max_bytes: PositiveInt = 2 * 1024**3
    min_bytes_per_s: float = Field(default=64 * 1024, ge=0)
    throughput_window_s: PositiveFloat = 30.0


class BudgetSettings(_Frozen):
    """Spend guard (manifest ``budget``): submits that would cross ``max_usd`` are held back."""

    max_usd: float | None = Field(default=None, ge=0)
