"""``seedance2``: the seedance2.ink Open API adapter (seedance2.md §2), a thin I/O shell.

Request building and response parsing live in :mod:`pipeline.providers.seedance2.codec`; this
module sends, receives and maps outcomes onto :mod:`pipeline.errors` by the money rules:

=====================================================  ==========================================
answer                                                 raised
=====================================================  ==========================================
connect refused / DNS / connect timeout                NotSent
429 (or an envelope code ``rate_limited``)             RateLimited (Retry-After honoured)
4xx, or 2xx ``success: false`` with a refusal code     Rejected (nothing created, not charged)
5xx, reset, read timeout, unparsable or odd 2xx,       Ambiguous (the task may exist and be
2xx ``success: false`` with an unknown code            charged: reconcile, never blind retry)
=====================================================  ==========================================

Credits are charged at submit [seedance2.md §2.3] and returned as ``creditsCharged``
(``JobHandle.credits``).
Result videos are public R2 URLs [seedance2.md §2.4] fetched with a credential-free
:class:`~pipeline.providers.urlfetch.UrlFetcher`, never with the API session.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pipeline.errors import (
    Ambiguous,
    FetchError,
    JobFailed,
    ProviderError,
    RateLimited,
    Rejected,
)
from pipeline.models import Download, JobHandle, MediaRef, PollResult, Shot
from pipeline.providers.base import ProviderContext
from pipeline.providers.codec_errors import MalformedAnswer, ProviderRefused
from pipeline.providers.http import (
    ApiClient,
    ApiResponse,
    bearer,
    redact,
    retry_after,
    status_error,
)
from pipeline.providers.lifecycle import HttpAdapter
from pipeline.providers.seedance2 import answers, codec
from pipeline.providers.urlfetch import UrlFetcher, policy_for

NAME = codec.NAME


class Seedance2Provider(HttpAdapter):
    """The seedance2.ink adapter (Provider + SupportsCancel), built from a :class:`ProviderContext`.

    Uses ``ctx.settings.base_url`` (``/api/open/v1`` is appended), ``ctx.api_key`` as the
    bearer token and ``ctx.simulate`` (plain-http loopback media URLs allowed).

    Args:
        ctx: settings, key and download policy of the run.
    """

    PROBE_PATH = "/models"  # free: the models list (under /api/open/v1)

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        self._simulate = ctx.simulate
        base = codec.api_base(ctx.settings.base_url or codec.DEFAULT_BASE_URL)
        headers = {**bearer(ctx.api_key), "Accept": "application/json"}
        super().__init__(
            ApiClient(base, headers=headers, provider=NAME),
            UrlFetcher(policy_for(ctx), provider=NAME),
        )

    # ----- submit / poll ------------------------------------------------------------------------

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """Create the task (the paid call) [seedance2.md §2.3]; ``key`` is ``metadata.client_ref``.

        Returns:
            The handle: ``job_id`` = ``requestId``, ``credits`` = ``creditsCharged``.

        Raises:
            NotSent: the request never left. RateLimited: 429, nothing created.
            Rejected: a definite refusal (validation, auth, balance), or more than 5 media
                (refused before sending). Ambiguous: the task may exist and be charged.
        """
        self._check_open()
        # public https only [seedance2.md §2.3, §2.6]; loopback http in --simulate
        for ref in media:
            problem = codec.media_url_problem(ref.url, allow_http=self._simulate)
            if problem is not None:
                raise Rejected(problem, provider=NAME, shot=shot.id)
        body = codec.build_submit(shot, media, key=key)
        if len(body.get("mediaUrls") or ()) > codec.MAX_MEDIA_URLS:
            raise Rejected(
                f"seedance2.ink takes at most {codec.MAX_MEDIA_URLS} mediaUrls",
                provider=NAME,
                shot=shot.id,
            )
        resp = await self.api.request("POST", codec.SUBMIT_PATH, shot=shot.id, json_body=body)
        if not 200 <= resp.status < 300:
            raise self._http_error(resp, "submit", shot.id)
        try:
            accepted = answers.parse_submit(resp.json())
        except ProviderRefused as refused:
            raise self._failure(answers.refusal_error(refused), "submit", shot.id, resp) from None
        except MalformedAnswer as exc:
            raise Ambiguous(
                f"unexpected submit answer (HTTP {resp.status}), the task may exist and be "
                f"charged: {exc}; body: {resp.text(120)}",
                provider=NAME,
                shot=shot.id,
                status=resp.status,
            ) from None
        return JobHandle(
            provider=NAME,
            job_id=accepted.request_id,
            model=shot.model,
            submitted_at=time.time(),
            credits=accepted.credits_charged,
        )

    async def poll(self, job: JobHandle) -> PollResult:
        """Ask once for the task's status [seedance2.md §2.4]. Never sleeps.

        Raises:
            JobFailed: the provider has no such task (404 / ``not_found``).
            RateLimited, NotSent, Ambiguous: transient; Rejected: e.g. the key was revoked.
        """
        self._check_open()
        resp = await self.api.request("GET", codec.task_path(job.job_id))
        if not 200 <= resp.status < 300:
            raise self._http_error(resp, "poll", "")
        try:
            return answers.parse_status(resp.json())
        except ProviderRefused as refused:
            raise self._failure(answers.refusal_error(refused), "poll", "", resp) from None
        except MalformedAnswer as exc:
            raise Ambiguous(
                f"unexpected poll answer for {job.job_id} (HTTP {resp.status}): {exc}",
                provider=NAME,
                status=resp.status,
            ) from None

    # ----- fetch --------------------------------------------------------------------------------

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        """Stream ``output.url`` (public, no auth [seedance2.md §2.4]) without the API credentials.

        Raises:
            FetchError: no URL, or it expired (``expired=True``: poll again), or refused.
            RateLimited, NotSent, Ambiguous: from the download host (retryable: idempotent).
        """
        self._check_open()
        if not result.result_url:
            raise FetchError(
                f"{job.job_id}: no output.url to fetch; poll again", expired=True, provider=NAME
            )
        async with self.urls.open(result.result_url) as download:
            yield download

    # ----- cancel (SupportsCancel) ----------------------------------------------------------------

    async def cancel(self, job: JobHandle) -> None:
        """Cancel a queued or processing task [seedance2.md §2.5].

        Raises:
            Rejected: the task cannot be cancelled (``"cannot be cancelled: already <status>"``
                for a finished task) or does not exist.
            RateLimited, NotSent, Ambiguous: transient.
        """
        self._check_open()
        resp = await self.api.request("POST", codec.cancel_path(job.job_id))
        if 200 <= resp.status < 300:
            try:
                answers.check_envelope(resp.json())
                return
            except ProviderRefused as refused:
                error = answers.refusal_error(refused)
            except MalformedAnswer as exc:
                raise Ambiguous(
                    f"unexpected cancel answer for {job.job_id}: {exc}",
                    provider=NAME,
                    status=resp.status,
                ) from None
            if answers.classify(error.code) is not answers.ErrorKind.REJECTED:
                raise self._failure(error, "cancel", "", resp)
        else:
            found = answers.parse_error(resp.json())
            refusal = (answers.ErrorKind.REJECTED, answers.ErrorKind.UNKNOWN)
            if (
                found is None
                or resp.status not in (400, 409)
                or answers.classify(found.code) not in refusal
            ):
                raise self._http_error(resp, "cancel", "")
            error = found
        raise await self._cancel_refused(job, error, resp.status)

    async def _cancel_refused(
        self, job: JobHandle, error: answers.ApiError, status: int
    ) -> Rejected:
        """The refusal of a cancel, naming the task's terminal status when a (free) poll tells."""
        try:
            current = await self.poll(job)
        except ProviderError:
            current = None
        if current is not None and current.status in answers.TERMINAL:
            text = f"{job.job_id} cannot be cancelled: already {current.raw_status}"
        else:
            text = f"{job.job_id} cannot be cancelled: {error.text}"
        return Rejected(text, provider=NAME, status=status, provider_message=redact(error.message))

    # ----- error mapping --------------------------------------------------------------------------

    def _http_error(self, resp: ApiResponse, stage: str, shot: str) -> ProviderError:
        """The error of a non-2xx answer: the generic mapping, refined by the envelope code."""
        error = answers.parse_error(resp.json())
        message = f"{stage}: {error.text if error else resp.text()}"
        if error is not None and 400 <= resp.status < 500 and resp.status != 429:
            kind = answers.classify(error.code)
            if kind is answers.ErrorKind.RATE_LIMITED or (
                kind is answers.ErrorKind.NOT_FOUND and stage == "poll"
            ):
                return self._failure(error, stage, shot, resp)
        return status_error(resp, message, provider=NAME, shot=shot)

    def _failure(
        self, error: answers.ApiError, stage: str, shot: str, resp: ApiResponse
    ) -> ProviderError:
        """The error a ``success: false`` envelope means for ``stage`` (see the module table)."""
        kind = answers.classify(error.code)
        text = f"{stage}: {error.text}"
        status = resp.status
        detail = redact(error.message)
        if kind is answers.ErrorKind.RATE_LIMITED:
            return RateLimited(
                text,
                retry_after=retry_after(resp.headers),
                provider=NAME,
                shot=shot,
                status=status,
                provider_message=detail,
            )
        if kind is answers.ErrorKind.NOT_FOUND and stage == "poll":
            return JobFailed(
                f"{text} (the provider has no such task)",
                refunded=None,
                provider=NAME,
                status=status,
                provider_message=detail,
            )
        if kind is answers.ErrorKind.UNKNOWN:
            text += " (unrecognised error code: the request may have had an effect)"
            return Ambiguous(text, provider=NAME, shot=shot, status=status, provider_message=detail)
        return Rejected(text, provider=NAME, shot=shot, status=status, provider_message=detail)
