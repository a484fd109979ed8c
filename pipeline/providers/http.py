"""The HTTP edge shared by the adapters: sessions, status classification, exception mapping.

aiohttp exceptions are translated into :mod:`pipeline.errors` in exactly one place,
:func:`map_http_errors` (after httpx's ``map_httpcore_exceptions``):

================================  =============================================================
aiohttp                           pipeline
================================  =============================================================
ConnectionTimeoutError            NotSent   (connect phase: no byte of the request left)
ClientConnectorError (DNS, refused) NotSent
SocketTimeoutError, TimeoutError  Ambiguous (the request may have been received)
ServerDisconnectedError, resets   Ambiguous
any other ClientError             Ambiguous
================================  =============================================================

HTTP statuses (:func:`status_error`): 429 -> RateLimited (Retry-After honoured), 5xx ->
Ambiguous, other 4xx -> Rejected. Error texts pass through :func:`redact` so no query string
(presigned signatures) or bearer token reaches a message.

Every wait is bounded (:class:`HttpLimits`, from the provider's settings): a connect timeout, a
per-read timeout and a total per API request; an API answer read whole is capped at
``max_response_bytes`` (at most cap + 1 bytes are read, then it is refused as Ambiguous); video
bodies streamed from :meth:`ApiClient.stream` have no total but a throughput floor (see
:mod:`pipeline.providers.urlfetch`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, cast

import aiohttp

from pipeline._util import redaction
from pipeline.errors import Ambiguous, ErrorContext, NotSent, ProviderError, RateLimited, Rejected
from pipeline.settings import DownloadSettings, ProviderSettings


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds of every request to one provider (see :class:`ProviderSettings`).

    Attributes:
        connect_timeout_s: seconds to open a connection.
        read_timeout_s: longest wait for the next bytes of an answer or a download.
        request_timeout_s: longest one API request may take, its answer read included.
        max_response_bytes: largest API answer read whole (JSON), in bytes.
        min_bytes_per_s: throughput floor of a streamed video body, bytes per second.
        throughput_window_s: window the floor is measured over, in seconds.
    """

    connect_timeout_s: float
    read_timeout_s: float
    request_timeout_s: float
    max_response_bytes: int
    min_bytes_per_s: float
    throughput_window_s: float

    @classmethod
    def of(
        cls,
        settings: ProviderSettings | None = None,
        downloads: DownloadSettings | None = None,
    ) -> HttpLimits:
        """The limits a provider's settings ask for (the settings' defaults when None)."""
        settings = settings or ProviderSettings()
        downloads = downloads or DownloadSettings()
        return cls(
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            max_response_bytes=settings.max_response_bytes,
            min_bytes_per_s=downloads.min_bytes_per_s,
            throughput_window_s=downloads.throughput_window_s,
        )

    def api_timeout(self) -> aiohttp.ClientTimeout:
        """Timeouts of an API request: connect, per read, and a total."""
        return aiohttp.ClientTimeout(
            total=self.request_timeout_s,
            sock_connect=self.connect_timeout_s,
            sock_read=self.read_timeout_s,
        )

    def stream_timeout(self) -> aiohttp.ClientTimeout:
        """Timeouts of a streamed body (a video): connect and per read; the floor does the rest."""
        return aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s
        )


class BoundedResponse(aiohttp.ClientResponse):
    """A response whose whole-body :meth:`read` is capped and timed (never read unbounded).

    Sessions use a subclass made by :func:`bounded_response` that carries the limits.
    Streaming the body (``resp.content``) is not affected.
    """

    limits: ClassVar[HttpLimits] = HttpLimits.of()
    provider: ClassVar[str] = ""

    async def read(self) -> bytes:
        """The body, at most ``max_response_bytes``, within ``request_timeout_s``.

        Raises:
            Ambiguous: the answer is larger than the cap (at most cap + 1 bytes were read).
            TimeoutError, aiohttp.ClientError: as aiohttp (mapped by :func:`map_http_errors`).
        """
        if self._body is None:
            cap = self.limits.max_response_bytes
            body: bytes | None = None
            try:
                if self.content_length is None or self.content_length <= cap:
                    async with asyncio.timeout(self.limits.request_timeout_s):
                        body = await _read_capped(self.content, cap)
            except BaseException:
                self.close()
                raise
            if body is None:
                self.close()  # drop the connection: the rest is never read
                raise Ambiguous(
                    f"answer larger than the cap of {cap} bytes (max_response_bytes); refused "
                    "unread",
                    provider=self.provider,
                    status=self.status,
                )
            self._body = body
        return await super().read()


async def _read_capped(content: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole stream, or None as soon as more than ``cap`` bytes arrived."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await content.read(cap + 1 - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    return None


def bounded_response(limits: HttpLimits, provider: str) -> type[BoundedResponse]:
    """A :class:`BoundedResponse` class bound to ``limits`` (a session's ``response_class``)."""
    attrs = {"limits": limits, "provider": provider}
    return cast(type[BoundedResponse], type("BoundedResponse", (BoundedResponse,), attrs))


#: ``text`` safe for messages (:func:`pipeline._util.redaction.redact_provider_text`).
redact = redaction.redact_provider_text


def _describe(exc: BaseException) -> str:
    detail = getattr(exc, "os_error", None) or exc
    text = str(detail).strip() or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}")


@contextmanager
def map_http_errors(**ctx: Any) -> Iterator[None]:
    """Translate aiohttp/network exceptions raised inside the block (see the module table).

    Keyword arguments are the :class:`~pipeline.errors.ErrorContext` (provider, shot...).
    """
    context: ErrorContext = {k: v for k, v in ctx.items() if k in ErrorContext.__annotations__}  # type: ignore[assignment]
    try:
        yield
    except ProviderError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise NotSent(f"connect timed out: {_describe(exc)}", **context) from exc
    except aiohttp.ClientConnectorError as exc:
        raise NotSent(f"could not connect: {_describe(exc)}", **context) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise Ambiguous(f"no complete answer: {_describe(exc)}", **context) from exc


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A fully read API response: ``status``, ``headers``, raw ``body`` bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``application/json``)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def text(self, limit: int = 300) -> str:
        """The body as (redacted, shortened) text for messages."""
        return redact(self.body[:limit].decode("utf-8", "replace"))


def status_error(resp: ApiResponse, message: str, **ctx: Any) -> ProviderError:
    """The error a non-2xx response means: 429 RateLimited, 5xx Ambiguous, 4xx Rejected."""
    context: ErrorContext = {k: v for k, v in ctx.items() if k in ErrorContext.__annotations__}  # type: ignore[assignment]
    context["status"] = resp.status
    context.setdefault("provider_message", redact(message))
    text = f"HTTP {resp.status}: {redact(message)}"
    if resp.status == 429:
        return RateLimited(text, retry_after=retry_after(resp.headers), **context)
    if resp.status >= 500 or resp.status == 408:
        return Ambiguous(text, **context)
    return Rejected(text, **context)


class ApiClient:
    """One aiohttp session per provider: base URL, auth headers, limits. Created lazily.

    Args:
        base_url: prefix that documented paths are appended to (no trailing slash needed).
        headers: headers on every request (e.g. ``Authorization``); never logged.
        provider: registry name, for error context.
        limits: timeouts and the answer cap (None: the adapter's settings, see
            :meth:`HttpAdapter.__init__`, else :class:`HttpLimits` defaults).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        provider: str,
        limits: HttpLimits | None = None,
        limit: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self.provider = provider
        self._limits = limits
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def limits(self) -> HttpLimits:
        """The limits in force."""
        return self._limits or HttpLimits.of()

    def adopt(self, limits: HttpLimits) -> None:
        """Use ``limits`` unless limits were given explicitly (before the session opens)."""
        if self._limits is None and self._session is None:
            self._limits = limits

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, opened on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self.limits.api_timeout(),
                connector=aiohttp.TCPConnector(limit=self._limit),
                response_class=bounded_response(self.limits, self.provider),
            )
        return self._session

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` under the base URL."""
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        shot: str = "",
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """Send one request and read the whole body (capped, within the request timeout).

        Raises:
            NotSent: the connection could not be made.
            Ambiguous: the exchange broke after the request may have been received, timed out,
                or the answer is larger than ``max_response_bytes``.
        """
        with map_http_errors(provider=self.provider, shot=shot):
            async with self.session.request(
                method, self.url(path), json=json_body, params=params, allow_redirects=False
            ) as resp:
                body = await resp.read()
                return ApiResponse(resp.status, dict(resp.headers), body)

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, shot: str = "", json_body: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request and yield the response unread (headers only).

        Used to branch on Content-Type before streaming a large body. Released on exit. No
        total timeout (a video may take long): per-read timeouts, the throughput floor of
        :func:`pipeline.providers.urlfetch.response_download`, and ``read()`` is capped.

        Raises:
            NotSent, Ambiguous: as :meth:`request`.
        """
        with map_http_errors(provider=self.provider, shot=shot):
            resp = await self.session.request(
                method,
                self.url(path),
                json=json_body,
                allow_redirects=False,
                timeout=self.limits.stream_timeout(),
            )
        try:
            yield resp
        finally:
            resp.release()

    async def aclose(self) -> None:
        """Close the session. Idempotent."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def bearer(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` headers (empty when there is no key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
