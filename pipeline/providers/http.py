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
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from pipeline import redaction
from pipeline.errors import Ambiguous, ErrorContext, NotSent, ProviderError, RateLimited, Rejected

if TYPE_CHECKING:  # urlfetch imports this module
    from pipeline.providers.urlfetch import UrlFetcher

#: Also masked in provider messages: any word after "bearer" or "key" (a token-like word).
_BEARER = re.compile(r"(?i)(bearer|key)\s+[A-Za-z0-9._~+/=-]+")

#: Default timeouts: connect quickly, give slow servers a minute per read.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=15.0, sock_read=60.0)


def redact(text: str) -> str:
    """``text`` safe for messages: :func:`pipeline.redaction.redact`, and more.

    Besides registered secrets, credentials and URL query strings, any token-like word after
    "bearer" or "key" is masked (provider error texts sometimes quote them).
    """
    return _BEARER.sub(r"\1 ***", redaction.redact(text))


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
    """One aiohttp session per provider: base URL, auth headers, timeouts. Created lazily.

    Args:
        base_url: prefix that documented paths are appended to (no trailing slash needed).
        headers: headers on every request (e.g. ``Authorization``); never logged.
        provider: registry name, for error context.
        timeout: aiohttp timeouts (default :data:`DEFAULT_TIMEOUT`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        provider: str,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        limit: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self.provider = provider
        self._timeout = timeout
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, opened on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._limit),
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
        """Send one request and read the whole body.

        Raises:
            NotSent: the connection could not be made.
            Ambiguous: the exchange broke after the request may have been received.
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

        Used to branch on Content-Type before streaming a large body. Released on exit.

        Raises:
            NotSent, Ambiguous: as :meth:`request`.
        """
        with map_http_errors(provider=self.provider, shot=shot):
            resp = await self.session.request(
                method, self.url(path), json=json_body, allow_redirects=False
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


class HttpAdapter:
    """The resource lifecycle every HTTP adapter shares (anyio ``AsyncResource`` style).

    An adapter owns two sessions: ``api``, the authenticated provider API, and ``urls``, the
    credential-free fetcher of result links. ``async with`` returns the adapter and closes both
    on exit; after :meth:`aclose` every stage method refuses to run (httpx ``ClientState``).
    Adapters call :meth:`_check_open` first in each public method.

    Args:
        api: the provider API client.
        urls: the download fetcher for result URLs.
    """

    #: A free GET (path under the base URL) whose success shows the provider answers again;
    #: used by the circuit breaker's half-open probe (``SupportsProbe``). Never a paid call.
    PROBE_PATH = "/models"

    def __init__(self, api: ApiClient, urls: UrlFetcher) -> None:
        self.api = api
        self.urls = urls
        self._closed = False

    async def probe(self) -> None:
        """One free request (``GET {base}{PROBE_PATH}``); returns when the provider answers.

        Raises:
            NotSent, Ambiguous, RateLimited, Rejected: the provider still fails (as mapped by
                :func:`status_error`).
        """
        self._check_open()
        resp = await self.api.request("GET", self.PROBE_PATH)
        if not 200 <= resp.status < 300:
            raise status_error(resp, resp.text(), provider=self.api.provider)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the API and download sessions; the adapter refuses further use. Idempotent."""
        self._closed = True
        try:
            await self.api.aclose()
        finally:
            await self.urls.aclose()

    def _check_open(self) -> None:
        """Refuse use after :meth:`aclose`.

        Raises:
            RuntimeError: the adapter is closed.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed: used after aclose()")
