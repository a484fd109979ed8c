"""``relaydance``: the RelayDance gateway (relaydance.md §4), a New-API-based video API.

::

    POST {base}/video/generations            submit -> {task_id, status: "submitted"}
    GET  {base}/video/generations/{task_id}  poll   -> {task_id, status, url, format, metadata}
    GET  result ``url``                      temporary signed URL (~30 min [seen in code]); no
    credentials
    GET  {base}/videos/{task_id}/content     bytes proxy with the API key [relaydance.md §4.1]
    (fallback)

The wire format lives in :mod:`pipeline.providers.relaydance.codec`; this module is the I/O shell.
Money rules: 400/401/403/404 at submit are definite refusals (Rejected), 429 is RateLimited, and
anything else that may have reached the gateway (5xx, resets, timeouts, an unparsable 2xx) is
Ambiguous. RelayDance documents "failed requests are not billed" for 5xx [relaydance.md §4.5], but
a 5xx
produced after the request was received can still have created the task, so it stays Ambiguous.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import quote

import aiohttp

from pipeline.errors import Ambiguous, FetchError, JobFailed, ProviderError
from pipeline.models import (
    Download,
    JobHandle,
    MediaRef,
    MediaRole,
    PollResult,
    Shot,
)
from pipeline.providers.base import ProviderContext
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.http import (
    ApiClient,
    ApiResponse,
    bearer,
    map_http_errors,
    redact,
)
from pipeline.providers.http import status_error as generic_status_error
from pipeline.providers.lifecycle import HttpAdapter
from pipeline.providers.relaydance.codec import (
    DEFAULTS,
    NAME,
    build_submit,
    parse_error,
    parse_status,
    parse_submit,
)
from pipeline.providers.urlfetch import UrlFetcher, policy_for, response_download

#: Seconds after submit during which 400/403/404 on the status route are transient [relaydance.md
#: §4.3].
TRANSIENT_S = 60.0
CHUNK = 1 << 16

_IMAGE_ROLES = frozenset({MediaRole.IMAGE, MediaRole.END_IMAGE, MediaRole.REFERENCE_IMAGE})


class RelayDanceProvider(HttpAdapter):
    """The RelayDance adapter (see the module docstring). Satisfies ``Provider`` structurally.

    Args:
        ctx: ``settings.base_url`` (default ``https://relaydance.com/v1``), ``api_key`` (Bearer),
            ``simulate`` (loopback result URLs allowed), download policy, known ``prices``.
    """

    PROBE_PATH = "/models"  # free: the models list

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(
            ApiClient(
                ctx.settings.base_url or DEFAULTS.base_url or "",
                headers=bearer(ctx.api_key),
                provider=NAME,
            ),
            UrlFetcher(policy_for(ctx), provider=NAME),
        )
        self.settings = ctx.settings

    # ----- submit -----------------------------------------------------------------------------

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """Create the task (the one paid call) [relaydance.md §4.2].

        ``key`` is not sent: RelayDance documents no client reference or idempotency field.

        Raises:
            NotSent: the connection was never made.
            RateLimited: 429 (``retry_after`` from Retry-After when present).
            Rejected: 400 invalid, 401 bad API key, 403 balance/permission, 404 unknown model.
            Ambiguous: 5xx, a broken exchange, or a 2xx without a task id.
        """
        self._check_open()
        body = build_submit(shot, media)
        submitted_at = time.time()
        resp = await self.api.request("POST", "video/generations", shot=shot.id, json_body=body)
        if not 200 <= resp.status < 300:
            raise self._error(resp, shot=shot.id, model=shot.model)
        try:
            task_id = parse_submit(resp.json())
        except MalformedAnswer as exc:
            raise Ambiguous(
                f"HTTP {resp.status} without a task id ({exc}): the task may exist: {resp.text()}",
                provider=NAME,
                shot=shot.id,
                status=resp.status,
            ) from exc
        return JobHandle(
            provider=NAME,
            job_id=task_id,
            model=shot.model,
            submitted_at=submitted_at,
            cost_usd=self._known_cost(shot),
        )

    def _known_cost(self, shot: Shot) -> float | None:
        """Cost from the manifest's ``prices`` (RelayDance's submit answer carries none)."""
        price = self.settings.prices.get(shot.model)
        if price is None:
            return None
        if price.per_second_usd is not None:
            return price.per_second_usd * shot.duration + (price.per_job_usd or 0.0)
        return price.per_job_usd

    def _error(self, resp: ApiResponse, *, shot: str = "", model: str = "") -> ProviderError:
        """Classify a non-2xx answer [relaydance.md §4.5] (generic mapping refined for 403)."""
        info = parse_error(resp.body)
        message = info.message or resp.text() or f"HTTP {resp.status}"
        if resp.status == 403:
            message = (
                f"insufficient balance, or model {model or '?'} is not allowed for this key: "
                f"{message}"
            )
        elif resp.status == 401:
            message = f"invalid, missing or revoked API key: {message}"
        elif resp.status == 404:
            message = f"unknown model {model or '?'} (or wrong path): {message}"
        return generic_status_error(resp, redact(message), provider=NAME, shot=shot)

    # ----- poll -------------------------------------------------------------------------------

    async def poll(self, job: JobHandle) -> PollResult:
        """Ask once for the task's status [relaydance.md §4.3]; never sleeps.

        Raises:
            Ambiguous: 400/403/404 within ``TRANSIENT_S`` of submit (the task is not visible yet
                [relaydance.md §4.3]), a 5xx, or an unparsable answer: poll again.
            JobFailed: the task is unknown (404 / ``task_not_exist``) long after submit.
            RateLimited, NotSent, Rejected: as the generic mapping (401: the key went bad).
        """
        self._check_open()
        resp = await self.api.request("GET", f"video/generations/{quote(job.job_id, safe='')}")
        if resp.status == 200:
            try:
                return parse_status(resp.json())
            except MalformedAnswer as exc:
                raise Ambiguous(f"unreadable status answer: {exc}", provider=NAME) from exc
        fresh = time.time() - job.submitted_at < TRANSIENT_S
        if resp.status in (400, 403, 404) and fresh:
            info = parse_error(resp.body)
            raise Ambiguous(
                f"task {job.job_id} not visible yet (HTTP {resp.status}: {redact(info.message)})",
                provider=NAME,
                status=resp.status,
            )
        if resp.status == 404 or parse_error(resp.body).code == "task_not_exist":
            raise JobFailed(
                f"task {job.job_id} is unknown to RelayDance (HTTP {resp.status})",
                refunded=None,
                provider=NAME,
                status=resp.status,
            )
        raise self._error(resp, model=job.model)

    # ----- fetch ------------------------------------------------------------------------------

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        """Stream the video: the signed ``url`` without credentials, else the content proxy.

        The signed URL expires (~30 min [relaydance.md §4.3]); when it answers expired (or is
        missing), the
        bytes are taken from ``/videos/{id}/content`` with the API key [relaydance.md §4.1, quirk
        §4.6.4].

        Raises:
            FetchError: both ways failed; ``expired=True`` when the video is gone (poll again).
            RateLimited, NotSent, Ambiguous: network trouble (downloads are idempotent).
        """
        self._check_open()
        async with AsyncExitStack() as stack:
            download: Download | None = None
            if result.result_url:
                try:
                    download = await stack.enter_async_context(self.urls.open(result.result_url))
                except FetchError as exc:
                    if not exc.expired:
                        raise
            if download is None:
                download = await stack.enter_async_context(self._proxy(job))
            yield download

    @asynccontextmanager
    async def _proxy(self, job: JobHandle) -> AsyncIterator[Download]:
        path = f"videos/{quote(job.job_id, safe='')}/content"
        async with self.api.stream("GET", path) as resp:
            if resp.status != 200:
                info = parse_error(await _read_small(resp))
                if resp.status == 429 or resp.status >= 500:
                    head = ApiResponse(resp.status, dict(resp.headers), b"")
                    raise generic_status_error(head, info.message or "content proxy failed")
                raise FetchError(
                    f"result URL expired and the content proxy answered {resp.status}: "
                    f"{redact(info.message)}",
                    expired=resp.status in (401, 403, 404, 410),
                    provider=NAME,
                    status=resp.status,
                )
            yield response_download(resp, NAME)


async def _read_small(resp: aiohttp.ClientResponse) -> bytes:
    with map_http_errors(provider=NAME):
        return await resp.content.read(4096)
