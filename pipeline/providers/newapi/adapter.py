"""``newapi``: an OpenAI-style New API gateway serving Vidu Q3 (docs/providers/newapi.md §3).

Thin I/O shell over :mod:`pipeline.providers.newapi.codec`. Routes used (§3.1), appended to the
gateway root in ``providers.newapi.base_url`` (no default: every gateway has its own host)::

    POST /v1/video/generations             submit (legacy path, seed gateway body)
    GET  /v1/video/generations/{task_id}   query (shapes A, B or C of §3.3)
    GET  /v1/videos/{task_id}/content      proxied MP4 (auth), when no usable result URL

Money rules (README, resume semantics): the gateway pre-consumes quota at submit and refunds
it when the upstream submit fails [seen in code: relay_task.go], so a definite error answer means
"not charged"
(``Rejected``); 429 is ``RateLimited``; resets, timeouts after send, other 5xx and unexpected 2xx
are ``Ambiguous``. The gateway takes no client reference, so ``key`` is not sent and there is no
reconcile. Result URLs (signed upstream CDN URLs that expire, §3.4) are fetched without the API
key; an expired one falls back to the gateway's content proxy.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import quote

from pipeline.errors import (
    Ambiguous,
    ErrorContext,
    FetchError,
    JobFailed,
    ProviderError,
    RateLimited,
    Rejected,
)
from pipeline.models import (
    Download,
    JobHandle,
    MediaRef,
    PollResult,
    Shot,
)
from pipeline.providers.base import ProviderContext
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.http import (
    ApiClient,
    ApiResponse,
    bearer,
    redact,
    retry_after,
    status_error,
)
from pipeline.providers.lifecycle import HttpAdapter
from pipeline.providers.newapi.answers import (
    ApiError,
    parse_error,
    parse_status,
    parse_submit,
)
from pipeline.providers.newapi.codec import NAME, build_submit
from pipeline.providers.urlfetch import UrlFetcher, policy_for, response_download

GENERATIONS = "/v1/video/generations"
VIDEOS = "/v1/videos"
CHUNK = 1 << 20
#: A fresh task may answer 400 ``task_not_exist`` for a while (§3.5.5); after this many seconds
#: the answer is believed [inferred].
NOT_EXIST_GRACE_S = 60.0
#: Task-error codes that are definite even with a 5xx status: the gateway answered itself and
#: refunded the pre-consumed quota [newapi.md §3.4 relay_task.go].
DEFINITE_CODES = frozenset({"get_channel_failed", "fail_to_fetch_task"})


def gateway_root(base_url: str) -> str:
    """The gateway root from ``base_url``; a trailing ``/v1`` is removed [inferred]."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _is_quota(status: int, err: ApiError) -> bool:
    text = f"{err.code} {err.message}".lower()
    return status in (402, 403) and ("quota" in text or "余额" in text or "额度" in text)


def request_error(resp: ApiResponse, *, shot: str = "") -> ProviderError:
    """The error a non-2xx gateway answer means, refined per §3.4.

    401 bad token and 402/403 insufficient quota are ``Rejected`` with a hint; the definite task
    codes (:data:`DEFINITE_CODES`) are ``Rejected`` whatever the status; everything else follows
    :func:`~pipeline.providers.http.status_error` (429 RateLimited, 5xx Ambiguous, 4xx Rejected).
    """
    err = parse_error(resp.body)
    said = redact(err.message or resp.text())
    ctx: ErrorContext = {
        "provider": NAME,
        "shot": shot,
        "status": resp.status,
        "provider_message": said,
    }
    if resp.status == 401:
        return Rejected(
            f"HTTP 401: the gateway refused the token ({said}); check the key in "
            "NEWAPI_API_KEY (or the variable named by providers.newapi.api_key_env)",
            **ctx,
        )
    if _is_quota(resp.status, err):
        return Rejected(
            f"HTTP {resp.status}: insufficient quota on the gateway account ({said}): "
            "top up the account or token quota, then run again",
            **ctx,
        )
    if err.code in DEFINITE_CODES:
        return Rejected(
            f"HTTP {resp.status} {err.code}: {said} (the gateway refunds failed submits: "
            "nothing was charged)",
            **ctx,
        )
    return status_error(resp, f"{err.code}: {said}" if err.code else said, provider=NAME, shot=shot)


class NewApiProvider(HttpAdapter):
    """The ``newapi`` adapter (see the module docstring). An async context manager.

    Args:
        ctx: ``settings.base_url`` (gateway root, required), ``api_key`` (gateway token),
            ``simulate`` (allows the simulator's loopback result URLs).

    Raises:
        Rejected: ``providers.newapi.base_url`` is not set.
    """

    PROBE_PATH = "/v1/models"  # free: the models list

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        if not ctx.settings.base_url:
            raise Rejected(
                "providers.newapi.base_url is not set: put your gateway's address in the "
                "manifest, e.g. providers: {newapi: {base_url: 'https://gateway.example.com'}}",
                provider=NAME,
            )
        super().__init__(
            ApiClient(
                gateway_root(ctx.settings.base_url), headers=bearer(ctx.api_key), provider=NAME
            ),
            UrlFetcher(policy_for(ctx), provider=NAME),
        )
        self._settings = ctx.settings
        self._max_bytes = ctx.downloads.max_bytes

    # ----- submit ---------------------------------------------------------------------------

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """POST the job (one paid call). ``key`` is not sent: the gateway has no client reference.

        Returns:
            JobHandle with ``job_id`` = ``task_id`` (else ``id``), both ids in ``data``, and
            ``cost_usd`` from ``providers.newapi.prices`` when the manifest gives a price.

        Raises:
            NotSent: the connection could not be made.
            RateLimited: 429 (nothing created).
            Rejected: a definite error answer (validation, token, quota, unavailable model).
            Ambiguous: reset/timeout after sending, 5xx, or an unexpected 2xx.
        """
        self._check_open()
        body = build_submit(shot, media)
        resp = await self.api.request("POST", GENERATIONS, shot=shot.id, json_body=body)
        if not 200 <= resp.status < 300:
            raise request_error(resp, shot=shot.id)
        try:
            answer = parse_submit(resp.json())
        except MalformedAnswer as exc:
            raise Ambiguous(
                f"HTTP {resp.status} with an unexpected submit answer ({exc}): the task may "
                "exist and be charged",
                provider=NAME,
                shot=shot.id,
                status=resp.status,
            ) from exc
        data = {k: v for k, v in (("id", answer.id), ("task_id", answer.task_id)) if v}
        return JobHandle(
            provider=NAME,
            job_id=answer.job_id,
            model=shot.model,
            submitted_at=time.time(),
            data=data,
            cost_usd=self._price(shot),
        )

    def _price(self, shot: Shot) -> float | None:
        price = self._settings.prices.get(shot.model)
        if price is None or (price.per_job_usd is None and price.per_second_usd is None):
            return None
        return (price.per_job_usd or 0.0) + (price.per_second_usd or 0.0) * shot.duration

    # ----- poll -----------------------------------------------------------------------------

    async def poll(self, job: JobHandle) -> PollResult:
        """GET the legacy query route once and normalise any of the three shapes. Never sleeps.

        Raises:
            Ambiguous: ``task_not_exist`` within :data:`NOT_EXIST_GRACE_S` of the submit (the
                task is not visible yet: poll again), 5xx, or an unparsable answer.
            JobFailed: ``task_not_exist`` later (``refunded`` None: unknown).
            RateLimited: 429. Rejected: other 4xx (e.g. the token was revoked).
        """
        self._check_open()
        path = f"{GENERATIONS}/{quote(job.job_id, safe='')}"
        resp = await self.api.request("GET", path)
        if 200 <= resp.status < 300:
            try:
                return parse_status(resp.json())
            except MalformedAnswer as exc:
                if parse_error(resp.body).code == "task_not_exist":
                    raise self._not_exist(job, resp.status) from None
                raise Ambiguous(
                    f"unexpected status answer for {job.job_id}: {exc}",
                    provider=NAME,
                    status=resp.status,
                ) from exc
        if parse_error(resp.body).code == "task_not_exist":
            raise self._not_exist(job, resp.status)
        raise request_error(resp)

    @staticmethod
    def _not_exist(job: JobHandle, status: int) -> ProviderError:
        age = time.time() - job.submitted_at
        if age < NOT_EXIST_GRACE_S:
            return Ambiguous(
                f"task {job.job_id} is not visible yet ({age:.0f} s after submit): poll again",
                provider=NAME,
                status=status,
                provider_message="task_not_exist",
            )
        return JobFailed(
            f"the gateway does not know task {job.job_id} (task_not_exist {age:.0f} s after "
            "submit)",
            refunded=None,
            provider=NAME,
            status=status,
            provider_message="task_not_exist",
        )

    # ----- fetch ----------------------------------------------------------------------------

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        """Stream the video: the result URL without credentials, else the gateway's proxy.

        The proxy ``GET /v1/videos/{task_id}/content`` (with the token: it is the gateway
        itself, §3.1) is used when no URL was given, or when the URL answered as expired.

        Raises:
            FetchError: refused or failed download; ``expired=True`` when the URL is gone and
                the proxy could not serve the video either (poll again).
            RateLimited, NotSent, Ambiguous: retryable transfer problems.
        """
        self._check_open()
        async with AsyncExitStack() as stack:
            yield await self._open(stack, job, result)

    async def _open(self, stack: AsyncExitStack, job: JobHandle, result: PollResult) -> Download:
        if not result.result_url:
            return await self._open_proxy(stack, job)
        try:
            return await stack.enter_async_context(self.urls.open(result.result_url))
        except FetchError as exc:
            if not exc.expired:
                raise
            expired = exc
        try:
            return await self._open_proxy(stack, job)
        except FetchError as exc:
            raise expired from exc

    async def _open_proxy(self, stack: AsyncExitStack, job: JobHandle) -> Download:
        path = f"{VIDEOS}/{quote(job.job_id, safe='')}/content"
        resp = await stack.enter_async_context(self.api.stream("GET", path))
        if resp.status == 429:
            raise RateLimited(
                "the gateway rate-limited the video download",
                retry_after=retry_after(resp.headers),
                provider=NAME,
                status=429,
            )
        if resp.status >= 500:
            raise Ambiguous(
                f"video proxy answered {resp.status}", provider=NAME, status=resp.status
            )
        if resp.status != 200:
            raise FetchError(
                f"video proxy answered {resp.status}",
                expired=resp.status in (403, 404, 410),
                provider=NAME,
                status=resp.status,
            )
        size = resp.content_length
        if size is not None and size > self._max_bytes:
            raise FetchError(
                f"result is {size} bytes, above the cap of {self._max_bytes}", provider=NAME
            )
        return response_download(resp, NAME)


# ----- offline checks and spec ----------------------------------------------------------------
