"""``venice``: the Venice AI video API (venice.md §1), as a thin I/O shell over the codec.

Flow: ``quote`` (free) -> ``queue`` (charged) -> ``retrieve`` until done -> bytes -> ``complete``.
Venice quirks handled here (§1.12):

- retrieve is polymorphic: :meth:`VeniceProvider.poll` branches on Content-Type *before*
  reading (``video/*`` = done; the bytes are read only by :meth:`VeniceProvider.fetch`);
- private models (``grok-imagine-*-private``) return a one-time ``download_url`` at queue time
  only: it goes into ``JobHandle.data["download_url"]`` (the checkpoint keeps it), is fetched
  without credentials and revoked by :meth:`VeniceProvider.cleanup`;
- there is no FAILED state: 422 / 404 / 500 on retrieve become :class:`JobFailed`;
- the 409 Seedance face-consent flow: resent once with the three attestations when the shot
  says ``consent: seedance``, otherwise refused with the policy text;
- no idempotency key exists, and non-429 4xx count against an error budget (30 s lockout),
  so nothing here retries; 4xx on queue are definite (:class:`Rejected`), 5xx and broken
  answers are :class:`Ambiguous` [venice.md §1.11].

The mapping of Venice's error answers lives in :mod:`pipeline.providers.venice.errors`, the model
table in :mod:`pipeline.providers.venice.models`.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType

import aiohttp
import anyio

from pipeline.errors import (
    Ambiguous,
    FetchError,
    JobFailed,
    ProviderError,
    Rejected,
)
from pipeline.models import (
    Download,
    JobHandle,
    JobStatus,
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
    map_http_errors,
    redact,
)
from pipeline.providers.lifecycle import HttpAdapter
from pipeline.providers.urlfetch import UrlFetcher, policy_for, response_download
from pipeline.providers.venice.codec import (
    DEFAULT_BASE_URL,
    MAX_BODY_BYTES,
    NAME,
    SEEDANCE_CONSENT,
    body_size,
    build_quote,
    build_submit,
    parse_error,
    parse_queue,
    parse_quote,
    parse_status,
    with_consent,
)
from pipeline.providers.venice.errors import HINTS, consent_refusal, venice_error


class VeniceProvider(HttpAdapter):
    """The Venice adapter: quote, queue, retrieve, download links, complete.

    Args:
        ctx: ``settings.base_url`` (default :data:`DEFAULT_BASE_URL`), ``api_key`` (Bearer),
            the download policy (result links are fetched without the API key).
    """

    PROBE_PATH = "/models?type=video"  # free: the models list

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        base_url = ctx.settings.base_url or DEFAULT_BASE_URL
        super().__init__(
            ApiClient(base_url, headers=bearer(ctx.api_key), provider=NAME),
            UrlFetcher(policy_for(ctx), provider=NAME),
        )

    # ----- submit ------------------------------------------------------------------------------

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """``POST /video/queue`` (the charged call) [venice.md §1.4].

        Venice has no idempotency key or client reference, so ``key`` is not sent. A 409
        needs_consent is answered once with :func:`with_consent` when ``shot.consent ==
        "seedance"`` [venice.md §1.5].

        Raises:
            Rejected: the body would exceed 35 MB, or a 4xx (400/401/402/403/409/413/422...).
            RateLimited: 429 (rate limit, error-budget lockout, overloaded model).
            Ambiguous: 5xx, a broken exchange, or a 2xx that is not ``{model, queue_id}``.
            NotSent: the connection could not be made.
        """
        self._check_open()
        body = build_submit(shot, media)
        size = await anyio.to_thread.run_sync(body_size, body)
        if size > MAX_BODY_BYTES:
            raise Rejected(
                f"request body would be {size} bytes, above Venice's 35 MB limit: host the "
                f"media and give https URLs instead",
                provider=NAME,
                shot=shot.id,
            )
        resp = await self.api.request("POST", "/video/queue", json_body=body, shot=shot.id)
        consenting = shot.consent == SEEDANCE_CONSENT
        if resp.status == 409 and consenting and parse_error(resp.json()).needs_consent:
            body = with_consent(body)
            resp = await self.api.request("POST", "/video/queue", json_body=body, shot=shot.id)
        return self._accepted(resp, shot, consented=consenting)

    def _accepted(self, resp: ApiResponse, shot: Shot, *, consented: bool) -> JobHandle:
        if resp.status == 409 and (err := parse_error(resp.json())).needs_consent:
            raise consent_refusal(resp, err, shot.id, sent=consented)
        if 400 <= resp.status < 600:
            err = parse_error(resp.json())
            hint = HINTS.get(resp.status, "")
            # x402 [venice.md §1.1]
            if resp.status == 402 and err.message == "Authentication required":
                hint = "no credentials were sent: set VENICE_API_KEY"
            raise venice_error(resp, err, hint, shot.id)
        if resp.status != 200:
            raise Ambiguous(
                f"unexpected HTTP {resp.status} from queue", provider=NAME, shot=shot.id
            )
        try:
            answer = parse_queue(resp.json())
        except MalformedAnswer as exc:
            raise Ambiguous(
                f"{exc}: {resp.text(120)}", provider=NAME, shot=shot.id, status=200
            ) from None
        data = {"download_url": answer.download_url} if answer.download_url else {}
        return JobHandle(
            provider=NAME,
            job_id=answer.queue_id,
            model=answer.model or shot.model,
            submitted_at=time.time(),
            data=MappingProxyType(data),
        )

    # ----- poll --------------------------------------------------------------------------------

    async def poll(self, job: JobHandle) -> PollResult:
        """``POST /video/retrieve`` once; a ``video/*`` answer is not read, only released.

        Returns:
            SUCCEEDED for a binary answer or ``COMPLETED`` (with the stored ``download_url``);
            RUNNING/QUEUED with ``eta_s`` and ``progress`` while processing [venice.md §1.6].

        Raises:
            JobFailed: 422 content policy (``refunded`` from ``credits_refunded``), 404 media
                gone (refunded unknown), 500 inference failed (refunded unknown) [venice.md §1.6,
                inferred].
            RateLimited: 429. Ambiguous: 503 or another 5xx, a broken or unreadable answer.
            Rejected: another 4xx (400/401/402/403).
        """
        self._check_open()
        ref = {"model": job.model, "queue_id": job.job_id}
        async with self.api.stream("POST", "/video/retrieve", json_body=ref) as resp:
            kind = (resp.content_type or "").lower()
            if resp.status == 200 and kind.startswith("video/"):
                return PollResult(JobStatus.SUCCEEDED, raw_status=kind, progress=1.0, eta_s=0.0)
            with map_http_errors(provider=NAME):
                answer = ApiResponse(resp.status, dict(resp.headers), await resp.read())
        if answer.status != 200:
            raise self._retrieve_error(answer, job)
        try:
            return parse_status(answer.json(), download_url=job.data.get("download_url"))
        except MalformedAnswer as exc:
            raise Ambiguous(f"{exc}: {answer.text(120)}", provider=NAME, status=200) from None

    def _retrieve_error(self, resp: ApiResponse, job: JobHandle) -> ProviderError:
        err = parse_error(resp.json())
        where = f"job {job.job_id} ({job.model})"
        if resp.status == 422:
            better = (
                f"; Venice suggests model {err.recommended_model}" if err.recommended_model else ""
            )
            return JobFailed(
                f"{where} failed: {redact(err.message)}{better}",
                refunded=err.credits_refunded,
                provider=NAME,
                status=422,
                provider_message=redact(err.message),
            )
        if resp.status == 404:
            return JobFailed(
                f"{where}: media not found (expired, deleted or completed): {redact(err.message)}",
                refunded=None,
                provider=NAME,
                status=404,
                provider_message=redact(err.message),
            )
        if resp.status == 500 and "inference" in err.message.lower():
            return JobFailed(
                f"{where}: inference failed: {redact(err.message)}",
                refunded=None,
                provider=NAME,
                status=500,
                provider_message=redact(err.message),
            )
        return venice_error(resp, err, "", "")

    # ----- fetch -------------------------------------------------------------------------------

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        """Open the finished video as a stream.

        Private models: ``GET download_url`` without credentials (:class:`UrlFetcher`);
        others: ``POST /video/retrieve`` again and stream its ``video/mp4`` body [venice.md §1.6,
        §1.8].

        Raises:
            FetchError: not a video answer, too large, or gone (``expired=True`` for 404/410).
            RateLimited: 429. NotSent, Ambiguous: network failures (fetching is idempotent); a
                truncated body raises from the chunk iterator.
        """
        self._check_open()
        url = job.data.get("download_url") or result.result_url
        if url:
            async with self.urls.open(url) as download:
                yield download
            return
        ref = {"model": job.model, "queue_id": job.job_id}
        async with self.api.stream("POST", "/video/retrieve", json_body=ref) as resp:
            await self._check_video(resp, job)
            yield response_download(resp, NAME)

    async def _check_video(self, resp: aiohttp.ClientResponse, job: JobHandle) -> None:
        kind = (resp.content_type or "").lower()
        if resp.status == 200 and kind.startswith("video/"):
            cap = self.urls.policy.max_bytes
            if resp.content_length is not None and resp.content_length > cap:
                raise FetchError(
                    f"result is {resp.content_length} bytes, above the cap of {cap}", provider=NAME
                )
            return
        with map_http_errors(provider=NAME):
            answer = ApiResponse(resp.status, dict(resp.headers), await resp.read())
        if answer.status == 429:
            raise venice_error(answer, parse_error(answer.json()), "", "")
        message = parse_error(answer.json()).message if answer.status != 200 else "still JSON"
        raise FetchError(
            f"job {job.job_id}: retrieve answered {answer.status} {kind or '?'}: {redact(message)}",
            expired=answer.status in (404, 410),
            provider=NAME,
            status=answer.status,
        )

    # ----- optional protocols ------------------------------------------------------------------

    async def quote(self, shot: Shot) -> float:
        """``POST /video/quote``: the USD price of ``shot`` (free, no job) [venice.md §1.3].

        Raises:
            Rejected: 4xx (invalid parameters, region). RateLimited: 429.
            Ambiguous: 5xx or an answer without a number (nothing is ever charged here).
        """
        self._check_open()
        resp = await self.api.request("POST", "/video/quote", json_body=build_quote(shot))
        if resp.status != 200:
            raise venice_error(resp, parse_error(resp.json()), "quote", shot.id)
        try:
            return parse_quote(resp.json())
        except MalformedAnswer as exc:
            raise Ambiguous(str(exc), provider=NAME, shot=shot.id, status=200) from None

    async def cleanup(self, job: JobHandle) -> None:
        """Revoke a private ``download_url`` (DELETE, no key), then ``POST /video/complete``.

        Order as recommended: GET -> DELETE url -> complete [venice.md §1.8]; an already revoked or
        expired link (404/410) counts as done.

        Raises:
            ProviderError: the DELETE or complete failed (the runner logs it).
        """
        self._check_open()
        url = job.data.get("download_url")
        if url:
            status = await self.urls.delete(url)
            if status not in (200, 202, 204, 404, 410):
                raise ProviderError(
                    f"revoking the download link of {job.job_id} answered {status}",
                    provider=NAME,
                    status=status,
                )
        ref = {"model": job.model, "queue_id": job.job_id}
        resp = await self.api.request("POST", "/video/complete", json_body=ref)
        payload = resp.json()
        if resp.status != 200 or not (isinstance(payload, dict) and payload.get("success")):
            raise venice_error(resp, parse_error(payload), "complete", "")
