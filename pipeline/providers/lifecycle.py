"""The resource lifecycle every HTTP adapter shares: an API session and a download fetcher."""

from __future__ import annotations

from typing import Self

from pipeline.providers.http import ApiClient, status_error
from pipeline.providers.urlfetch import UrlFetcher


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
        api.adopt(urls.policy.limits)  # the provider's settings, via ``policy_for(ctx)``
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
