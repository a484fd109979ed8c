"""Typed settings from the manifest's top-level sections (``providers``, ``storage``, ...).

These are pydantic models (frozen, ``extra="forbid"``) so a typo in the YAML is an error with its
file and line, never a silently ignored key. Environment variables are *not* read here: the
manifest names the variable (``api_key_env``) and only ``pipeline.cli.main`` reads it, after
:mod:`pipeline.cli.endpoints` has checked that the user, not the manifest, chose it.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
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


class PollPolicy(_Frozen):
    """When a job is polled (a view of :class:`ProviderSettings`, defaults filled in).

    Attributes:
        min_s / max_s: bounds of the wait between two polls of one job, in seconds.
        deadline_s: longest a job may stay unfinished, in seconds from its submit.
    """

    min_s: PositiveFloat = 2.0
    max_s: PositiveFloat = 30.0
    deadline_s: PositiveFloat = 3600.0


class BreakerPolicy(_Frozen):
    """When a provider's circuit breaker opens and for how long (``pipeline.engine.limits``).

    Attributes:
        threshold: consecutive server errors or timeouts that open it.
        window_s: those failures must fall within this many seconds.
        cooldown_s: seconds open (no paid call) before one free probe may close it.
    """

    threshold: PositiveInt = 5
    window_s: PositiveFloat = 60.0
    cooldown_s: PositiveFloat = 30.0


class RetryPolicy(_Frozen):
    """How one provider's failed calls are retried (manifest ``providers.<name>.retry``).

    One policy for every retried operation of the provider (submits that provably created
    nothing, polls, fetches, uploads, quotes): ``attempts`` tries within ``timeout_s`` seconds,
    the n-th wait drawn from ``[0, min(wait_max_s, wait_initial_s * 2**n)]`` (full jitter).
    The provider's retry budget starts with ``budget_initial`` retries and earns
    ``budget_ratio`` of one per successful call, so retries stay a bounded share of the load.
    """

    attempts: PositiveInt = 5
    timeout_s: PositiveFloat = 600.0
    wait_initial_s: PositiveFloat = 1.0
    wait_max_s: PositiveFloat = 60.0
    budget_initial: float = Field(default=10.0, ge=0)
    budget_ratio: float = Field(default=0.1, ge=0)


MIB = 1024 * 1024


class ProviderSettings(_Frozen):
    """Per-provider settings (manifest ``providers.<name>``).

    Every default lives here: a field the manifest leaves out takes the adapter's default
    (``ProviderSpec.defaults``, see :meth:`merged`), else the default below. Related fields are
    also offered as value objects (:attr:`polling`, :attr:`breaker`, :attr:`retry`).

    Attributes:
        base_url: prefix the provider's documented paths are appended to (None: the adapter's).
        api_key_env: name of the environment variable holding the API key.
        max_in_flight: jobs submitted and not yet terminal at the provider (account
            concurrency; default 4).
        requests_per_minute: submit requests per minute (None: unlimited).
        polls_per_minute: poll requests per minute (None: unlimited).
        poll_min_s / poll_max_s: bounds of the poll interval in seconds (default 2 / 30).
        poll_deadline_s: longest a job may stay unfinished before the shot fails as timed out
            (default 3600).
        max_uploads / max_downloads: concurrent media uploads / result downloads (default 4).
        latency_s: ``local`` only: simulated queue time added to every job, in seconds.
        breaker_threshold: consecutive server errors/timeouts that stop paid calls (default 5).
        breaker_cooldown_s: seconds paid calls stay stopped before a free probe (default 30).
        retry: how failed calls are retried (:class:`RetryPolicy`).
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
        account: the provider account whose limits the shots share in the distributed mode
            (``--store``): every run and manifest naming the same account shares one queue,
            so ``max_in_flight`` and ``requests_per_minute`` hold across all of them
            (default ``default``; ``[A-Za-z0-9][A-Za-z0-9_.-]*``; ignored by embedded runs).
    """

    base_url: str | None = None
    api_key_env: str | None = None
    max_in_flight: PositiveInt = 4
    requests_per_minute: PositiveFloat | None = None
    polls_per_minute: PositiveFloat | None = None
    poll_min_s: PositiveFloat = 2.0
    poll_max_s: PositiveFloat = 30.0
    poll_deadline_s: PositiveFloat = 3600.0
    max_uploads: PositiveInt = 4
    max_downloads: PositiveInt = 4
    latency_s: float = Field(default=0.0, ge=0)
    breaker_threshold: PositiveInt = 5
    breaker_cooldown_s: PositiveFloat = 30.0
    retry: RetryPolicy = RetryPolicy()
    prices: dict[str, Price] = Field(default_factory=dict)
    usd_per_credit: float | None = Field(default=None, ge=0)
    max_retry_after_s: float = Field(default=600.0, ge=0)
    connect_timeout_s: PositiveFloat = 10.0
    read_timeout_s: PositiveFloat = 60.0
    request_timeout_s: PositiveFloat = 120.0
    max_response_bytes: PositiveInt = 16 * MIB
    account: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    check_base_url = field_validator("base_url")(api_url)
    check_api_key_env = field_validator("api_key_env")(key_variable)

    @cached_property
    def polling(self) -> PollPolicy:
        """The poll interval bounds and deadline."""
        return PollPolicy(
            min_s=self.poll_min_s, max_s=self.poll_max_s, deadline_s=self.poll_deadline_s
        )

    @cached_property
    def breaker(self) -> BreakerPolicy:
        """The circuit breaker's threshold and cool-down."""
        return BreakerPolicy(threshold=self.breaker_threshold, cooldown_s=self.breaker_cooldown_s)

    def merged(self, defaults: ProviderSettings) -> ProviderSettings:
        """These settings over ``defaults``.

        A field set here (and not None) wins, then a field set in ``defaults``, then the class
        default.
        """
        data = defaults.model_dump(include=defaults.model_fields_set)
        mine = self.model_dump(include=self.model_fields_set)
        data.update({k: v for k, v in mine.items() if v is not None})
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
