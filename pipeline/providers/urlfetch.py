"""Fetching result videos from provider-supplied URLs, safely.

Result URLs come from a remote service, so they are untrusted input (README "Reliability", R14/R15):

- a separate session with **no credentials** (the API key never reaches a download host);
- scheme ``https`` only, except origins explicitly allowed (the simulators in ``--simulate``
  mode, or ``downloads.allow_hosts`` in the manifest);
- the host must resolve only to public addresses unless allowed (no loopback, private,
  link-local such as 169.254.169.254, multicast or reserved targets);
- redirects are followed by hand, at most 3, each hop checked the same way; more (a redirect
  loop) is a refusal (``rejected``: the shot fails ``download_rejected``, never stays stuck);
- ``Content-Length`` above the cap is refused before the body is read (the stream consumer
  counts bytes as well);
- every wait is bounded: connect and per-read timeouts, and a throughput floor
  (``downloads.min_bytes_per_s`` over ``downloads.throughput_window_s``) instead of a total, so
  a body that drips is cut within about one window (a retryable :class:`FetchError`);
- 403/404/410 mean "expired": the runner refreshes the URL by polling, never by resubmitting.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from pipeline.errors import FetchError, RateLimited
from pipeline.models import Download
from pipeline.providers.base import ProviderContext
from pipeline.providers.http import (
    BoundedResponse,
    HttpLimits,
    bounded_response,
    map_http_errors,
    redact,
    retry_after,
)

MAX_REDIRECTS = 3
CHUNK = 1 << 20
_EXPIRED = {401, 403, 404, 410}


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which result URLs may be fetched.

    Attributes:
        allow_hosts: ``host`` or ``host:port`` entries trusted even on private addresses, and
            allowed over plain http.
        max_bytes: the size cap.
        resolver: how names are resolved (None: the system's; injectable in tests).
        limits: timeouts and throughput floor of the provider (also adopted by its API client).
    """

    allow_hosts: Collection[str] = field(default_factory=frozenset)
    max_bytes: int = 2 * 1024**3
    resolver: Resolver | None = None
    limits: HttpLimits = field(default_factory=HttpLimits.of)

    def allows(self, host: str, port: int | None) -> bool:
        """True when ``host`` (or ``host:port``) is explicitly trusted."""
        return host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses of ``host``: the injected resolver (tests), else the system's.

        Raises:
            FetchError: the name does not resolve.
        """
        if self.resolver is not None:
            return await self.resolver(host, port)
        return await _resolve(host, port)


#: ``(host, port) -> addresses``: how a :class:`UrlPolicy` resolves names (injectable in tests).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class PolicyResolver(AbstractResolver):
    """The download session's resolver: refuses non-public addresses at connect time too.

    :func:`check_url` looks before a request; this looks again when aiohttp connects, so a
    name that resolves differently the second time (DNS rebinding) still cannot reach a
    private, loopback or link-local address unless the host is in ``allow_hosts``.
    """

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and refuse it when any address is not public (unless allowed)."""
        try:
            addresses = await self.policy.resolve(host, port)
        except FetchError as exc:
            raise OSError(str(exc)) from exc
        if not self.policy.allows(host, port):
            for address in addresses:
                if not ipaddress.ip_address(address.split("%")[0]).is_global:
                    raise OSError(f"refusing to connect to {host}: non-public address {address}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


def policy_for(ctx: ProviderContext) -> UrlPolicy:
    """The download policy of an adapter.

    The manifest's ``downloads`` settings, plus the provider's own origin when talking to the
    in-process simulators (``--simulate``).
    """
    allowed = set(ctx.downloads.allow_hosts)
    if ctx.simulate and ctx.settings.base_url:
        parts = urlsplit(ctx.settings.base_url)
        if parts.hostname:
            allowed.add(f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname)
    return UrlPolicy(
        allow_hosts=frozenset(allowed),
        max_bytes=ctx.downloads.max_bytes,
        limits=HttpLimits.of(ctx.settings, ctx.downloads),
    )


async def check_url(url: str, policy: UrlPolicy, *, provider: str = "") -> None:
    """Refuse a URL that is not https to a public host (or explicitly allowed).

    Raises:
        FetchError: with the reason; nothing was sent.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchError(
            f"refusing result URL without a host: {redact(url)}", provider=provider, rejected=True
        )
    trusted = policy.allows(host, parts.port)
    if parts.scheme != "https" and not (trusted and parts.scheme == "http"):
        raise FetchError(
            f"refusing result URL with scheme {parts.scheme!r} (https only): {redact(url)}",
            provider=provider,
            rejected=True,
        )
    if trusted:
        return
    for address in await policy.resolve(host, parts.port or 443):
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise FetchError(
                f"refusing result URL: {host} resolves to non-public address {address}",
                provider=provider,
                rejected=True,
            )


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


class UrlFetcher:
    """A credential-free download session. One per adapter; close with :meth:`aclose`."""

    def __init__(self, policy: UrlPolicy, *, provider: str) -> None:
        self.policy = policy
        self.provider = provider
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session (no auth headers, no automatic redirects), opened on first use."""
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=PolicyResolver(self.policy), limit=64)
            self._session = aiohttp.ClientSession(
                timeout=self.policy.limits.stream_timeout(),
                auto_decompress=True,
                connector=connector,
                response_class=bounded_response(self.policy.limits, self.provider),
            )
        return self._session

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Download]:
        """Open ``url`` (checked, redirects checked) as a :class:`Download` stream.

        Raises:
            FetchError: refused URL, too large, a redirect loop (``rejected=True``), or expired
                (``expired=True`` for 401/403/404/410).
            RateLimited: 429 from the download host.
            NotSent, Ambiguous: network failures (retryable: downloads are idempotent).
        """
        ctx = {"provider": self.provider}
        for _ in range(MAX_REDIRECTS + 1):
            await check_url(url, self.policy, provider=self.provider)
            with map_http_errors(**ctx):
                resp = await self.session.get(url, allow_redirects=False, read_bufsize=CHUNK)
            try:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                self._check_response(resp)
                yield response_download(resp, self.provider)
                return
            finally:
                resp.release()
        raise FetchError(
            f"more than {MAX_REDIRECTS} redirects (a redirect loop?): last to {redact(url)}",
            provider=self.provider,
            rejected=True,
        )

    def _check_response(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 429:
            raise RateLimited(
                "download host rate-limited us",
                retry_after=retry_after(resp.headers),
                provider=self.provider,
                status=429,
            )
        if resp.status in _EXPIRED:
            raise FetchError(
                f"result URL answered {resp.status} (expired or revoked)",
                expired=True,
                provider=self.provider,
                status=resp.status,
            )
        if resp.status != 200:
            raise FetchError(
                f"result URL answered {resp.status}", provider=self.provider, status=resp.status
            )
        size = resp.content_length
        if size is not None and size > self.policy.max_bytes:
            raise FetchError(
                f"result is {size} bytes, above the cap of {self.policy.max_bytes}",
                provider=self.provider,
                rejected=True,
            )

    async def delete(self, url: str) -> int:
        """DELETE ``url`` (e.g. revoke a one-time link); returns the status. Checked like GET."""
        await check_url(url, self.policy, provider=self.provider)
        with map_http_errors(provider=self.provider):
            async with self.session.delete(url, allow_redirects=False) as resp:
                return resp.status

    async def aclose(self) -> None:
        """Close the session. Idempotent."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def response_download(
    resp: aiohttp.ClientResponse, provider: str, limits: HttpLimits | None = None
) -> Download:
    """The checked 200 response ``resp`` as a :class:`Download` (its body is read lazily).

    ``size`` is the length of the body as the consumer will read it: the ``Content-Length``,
    unless the response has a ``Content-Encoding`` other than ``identity``. aiohttp decodes
    gzip/deflate/br bodies, and their ``Content-Length`` counts the encoded bytes (RFC 9110
    §8.6), so the decoded length is unknown (None); a truncated encoded body still fails, as
    aiohttp raises ``ClientPayloadError`` when the connection ends short of it.

    The body is held to ``limits`` (default: those of the session that made ``resp``): a
    throughput floor over a window, see :func:`_chunks`.
    """
    if limits is None:
        limits = resp.limits if isinstance(resp, BoundedResponse) else HttpLimits.of()
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    size = resp.content_length if encoding in ("", "identity") else None
    return Download(_chunks(resp, provider, limits), size, resp.content_type)


async def _chunks(
    resp: aiohttp.ClientResponse, provider: str, limits: HttpLimits
) -> AsyncIterator[bytes]:
    """The body as the connection delivers it: each piece as received, never joined.

    ``iter_chunked(n)`` joins the pieces buffered while the consumer was busy into a new object
    of up to ``n`` bytes (a copy, and a fresh allocation, per MiB); the consumer here copies
    into its own buffers anyway. The read buffer (``read_bufsize=CHUNK``) keeps flow control
    pausing the socket at 2 MiB buffered, as ``iter_chunked(CHUNK)`` did.

    Each ``throughput_window_s`` window must bring at least ``min_bytes_per_s`` times its length
    (the wait for a piece ends at the window's end, so a drip is cut within one window).

    Raises:
        FetchError: the body came slower than the floor (retryable: the fetch is tried again).
        NotSent, Ambiguous: network failures and per-read timeouts.
    """
    window = limits.throughput_window_s
    floor = limits.min_bytes_per_s * window
    loop = asyncio.get_running_loop()
    window_end = loop.time() + window
    got = 0
    with map_http_errors(provider=provider):
        while True:
            if loop.time() >= window_end:
                if got < floor:
                    raise FetchError(
                        f"download too slow: {got} bytes in {window:g} s, below the floor of "
                        f"{limits.min_bytes_per_s:g} bytes/s (downloads.min_bytes_per_s)",
                        provider=provider,
                    )
                window_end, got = loop.time() + window, 0
            scope = asyncio.timeout_at(window_end)
            try:
                async with scope:
                    chunk, end_of_http_chunk = await resp.content.readchunk()
            except TimeoutError:
                if scope.expired():
                    continue  # the window ended while waiting: check the floor
                raise  # aiohttp's per-read timeout
            if not chunk and not end_of_http_chunk:
                return  # end of the body
            got += len(chunk)
            if chunk:
                yield chunk
