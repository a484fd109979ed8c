"""One shot's stage machine: upload -> submit -> poll -> fetch, resumable from any recorded state.

Money rules (README, resume semantics): a ``submit_intent`` is durable before every POST; only a
submit that provably created nothing (``NotSent``, 429) is tried again, as the same attempt and
key; anything ambiguous ends in ``needs_reconcile`` unless the provider can prove what happened
(:class:`~pipeline.providers.base.SupportsReconcile`). A shot with a ``submitted`` record is only
ever polled, never submitted again. Expired result URLs are refreshed by polling (free).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

import anyio

from pipeline._util.redaction import scrub
from pipeline.engine import pricing, retry
from pipeline.engine.context import RunContext, output_path
from pipeline.engine.guarded import GuardedCalls
from pipeline.engine.limits import BreakerState, CallKind
from pipeline.errors import (
    Ambiguous,
    CheckpointError,
    FetchError,
    JobFailed,
    NotSent,
    ProviderError,
    RateLimited,
    Rejected,
)
from pipeline.journal.checkpoint import ts_epoch
from pipeline.journal.state import ShotRecord
from pipeline.models import (
    Artifact,
    Asset,
    Charged,
    Event,
    JobHandle,
    JobStatus,
    MediaRef,
    PollResult,
    Shot,
    ShotState,
)
from pipeline.providers.base import (
    SupportsCleanup,
    SupportsQuote,
    SupportsReconcile,
)
from pipeline.transfer import download, playable, upload

log = logging.getLogger("pipeline")

#: Longest a submit may stay shielded from cancellation before it is recorded as ambiguous.
SUBMIT_SHIELD_S = 300.0


class _Stop(Exception):
    """The shot ends here (its final state is already recorded)."""


class ShotMachine:
    """Drives one shot from its recorded state to a terminal state."""

    def __init__(self, ctx: RunContext, shot: Shot, rec: ShotRecord | None) -> None:
        self.ctx = ctx
        self.shot = shot
        self.rec = rec
        self.provider = ctx.providers[shot.provider]
        self.gate = ctx.gates[shot.provider]
        self.settings = ctx.settings[shot.provider]
        self.calls = GuardedCalls(self.provider, self.gate)
        self._est_usd: float | None = None
        self._reserved = False

    async def _emit(self, ev: Event, state: ShotState, detail: str = "", **fields: Any) -> None:
        await self.ctx.append(ev, self.shot.id, **fields)
        self.ctx.observer.transition(self.shot, state, detail)

    async def run(self) -> None:
        """Run the remaining stages. CheckpointError propagates (fail-stop); nothing else does."""
        try:
            await self._run()
        except _Stop:
            return
        except (CheckpointError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:  # a bug must not take the batch down; record it
            # A bug, not an expected failure: the traceback only with -v (INFO).
            log.error(
                "%s: internal error (a bug: please report it): %s: %s",
                self.shot.id,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.INFO),
            )
            charged = Charged.UNKNOWN if self._job() else Charged.NO
            await self._emit(
                Event.FAILED,
                ShotState.FAILED,
                str(exc),
                reason=f"internal error: {exc}",
                charged=charged.value,
            )

    def _job(self) -> JobHandle | None:
        return self.rec.job if self.rec else None

    async def _run(self) -> None:
        rec = self.rec
        state = rec.state if rec else ShotState.PENDING
        if state == ShotState.DONE and rec and await self._still_done(rec):
            return
        job: JobHandle | None = None
        result: PollResult | None = None
        if state == ShotState.SUBMITTING:
            job = await self._reconcile()
        elif state in (ShotState.POLLING, ShotState.FETCHING, ShotState.DONE):
            job = self._job()
        if state == ShotState.FETCHING and rec and rec.result_url is not None:
            result = PollResult(JobStatus.SUCCEEDED, result_url=rec.result_url)
        media = await self._upload() if job is None else []
        async with self.gate.jobs:  # held from submit until the job is terminal
            if job is None:
                job = await self._submit(media)
            if result is None:
                result = await self._poll(job)
        await self._fetch(job, result)

    # ----- done shots ---------------------------------------------------------------------

    async def _still_done(self, rec: ShotRecord) -> bool:
        if rec.output is None or rec.size is None or rec.sha256 is None:
            return False
        final = self.ctx.run_dir / rec.output
        return await anyio.to_thread.run_sync(
            download.finish_interrupted, final, rec.size, rec.sha256
        )

    # ----- upload -------------------------------------------------------------------------

    async def _upload(self) -> list[MediaRef]:
        assets = self.shot.assets
        if not assets:
            return []
        self.ctx.observer.transition(self.shot, ShotState.UPLOADING)
        mode = self.ctx.policies[self.shot.provider].mode_for(self.shot)
        try:
            return [await self._prepare(asset, mode) for asset in assets]
        except Rejected as exc:  # e.g. storage credentials missing or refused: nothing was paid
            await self._fail(f"upload refused: {exc}", Charged.NO)
        except (NotSent, RateLimited, Ambiguous) as exc:  # storage unreachable: try next run
            reason = f"not uploaded (retries exhausted, run again later): {exc}"
            log.warning("%s: %s", self.shot.id, reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, reason)
            raise _Stop from None

    async def _prepare(self, asset: Asset, mode: str) -> MediaRef:
        valid_for = self.ctx.media.min_validity_s
        recorded = self.rec.media.get(asset.key) if self.rec else None
        if recorded is not None and upload.usable(recorded, valid_for):
            return upload.with_role(recorded, asset)
        key = (self.shot.provider, asset.key, mode)
        lock = self.ctx.media_locks.setdefault(key, anyio.Lock())
        async with lock:  # single flight per (provider, content, mode)
            ref = self.ctx.media_cache.get(key)
            if ref is None or not (ref.url.startswith("data:") or upload.usable(ref, valid_for)):
                async with self.gate.uploads:
                    ref = await self.calls.call(
                        lambda: self.ctx.media.resolve(asset, mode), provider_health=False
                    )
                self.ctx.media_cache[key] = ref
        ref = upload.with_role(ref, asset)
        if asset.path is not None and not ref.url.startswith("data:"):
            await self.ctx.append(
                Event.UPLOADED,
                self.shot.id,
                asset=asset.key,
                url=ref.url,
                role=ref.role.value,
                sha256=ref.sha256,
                mime=ref.mime,
                expires_at=ref.expires_at,
            )
        return ref

    async def _call(
        self,
        fn: Callable[[], Awaitable[Any]],
        kind: CallKind = CallKind.OTHER,
        deadline: float | None = None,
    ) -> Any:
        """A free, idempotent provider call (gate, retries, breaker): see ``engine.guarded``."""
        return await self.calls.call(fn, kind, deadline=deadline)

    # ----- submit -------------------------------------------------------------------------

    def _attempt(self) -> int:
        """Number of the next submit attempt.

        The same attempt (and key) only when the last one provably left nothing behind
        (``submit_not_sent``); otherwise a new one with a new client key.
        """
        rec = self.rec
        if rec is None or rec.attempt == 0:
            return 1
        return rec.attempt if rec.reuse_attempt else rec.attempt + 1

    async def _estimate(self) -> float | None:
        """The shot's price in USD before it is paid, or None when unknown (``engine.pricing``).

        The provider's free quote where it has one (Venice ``/video/quote``), through the
        guarded call (gate, retries, breaker); else the offline price ``pipeline plan`` shows.
        """
        quote: Callable[[], Awaitable[float]] | None = None
        if self.ctx.supports(self.shot.provider, SupportsQuote):
            provider = cast(SupportsQuote, self.provider)

            async def guarded_quote() -> float:
                quoted: float = await self._call(lambda: provider.quote(self.shot))
                return quoted

            quote = guarded_quote
        spec = self.ctx.options.registry[self.shot.provider]
        return (await pricing.estimate(self.shot, spec, self.settings, quote)).usd

    async def _submit(self, media: list[MediaRef]) -> JobHandle:
        att = self._attempt()
        key = f"{self.ctx.run_id}:{self.shot.id}:{att}"
        self._est_usd = await self._estimate()
        held = self.ctx.spend.reserve(self.shot.id, self._est_usd)
        if held is not None:
            log.warning("%s: %s", self.shot.id, held.reason)
            await self.ctx.append(Event.SUBMIT_HELD, self.shot.id, why=held.why, reason=held.reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, held.reason)
            raise _Stop
        self._reserved = True
        self.ctx.observer.spending(self.ctx.spend.committed_usd, self.ctx.spend.limit_usd)

        async def once() -> JobHandle:
            await self._breaker_closed()
            await self.gate.ready(CallKind.SUBMIT)
            return await self._submit_once(media, att, key)

        try:
            return await retry.call(lambda: self.calls.backoff(retry.submit_retryable), once)
        except (NotSent, RateLimited) as exc:
            # Nothing was created: the shot stays pending and the next run tries it again.
            self._release()
            reason = f"not sent (retries exhausted, run again later): {exc}"
            log.warning("%s: %s", self.shot.id, reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, reason)
            raise _Stop from None

    async def _submit_once(self, media: list[MediaRef], att: int, key: str) -> JobHandle:
        """Intent, POST, outcome: shielded so an interrupt cannot lose the outcome."""
        shot = self.shot
        outcome: JobHandle | ProviderError | None = None
        with anyio.move_on_after(SUBMIT_SHIELD_S, shield=True):
            await self._emit(
                Event.SUBMIT_INTENT,
                ShotState.SUBMITTING,
                att=att,
                key=key,
                fp=shot.fingerprint,
                prov=shot.provider,
                model=shot.model,
                est_usd=self._est_usd,
            )
            await self.gate.pace_send()  # the intent's fsync must not bunch the sends up
            try:
                outcome = await self.provider.submit(shot, media, key=key)
            except ProviderError as exc:
                outcome = exc
            if isinstance(outcome, JobHandle):
                await self._record_submitted(outcome)
        if outcome is None:
            outcome = Ambiguous(f"no answer within {SUBMIT_SHIELD_S:.0f} s")
        self.calls.record(outcome)
        if isinstance(outcome, JobHandle):
            return outcome
        return await self._submit_failed(outcome)

    async def _breaker_closed(self) -> None:
        """No paid call while the provider's circuit breaker is open (pipeline.engine.guarded)."""
        deadline = self.settings.poll_deadline_s or 3600.0
        if not await self.calls.wait_closed(deadline):
            reason = (
                f"{self.shot.provider} kept failing (circuit breaker open for {deadline:.0f} s); "
                "not submitted: run again later"
            )
            log.warning("%s: %s", self.shot.id, reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, reason)
            raise _Stop

    async def _record_submitted(self, job: JobHandle, *, reconciled: bool = False) -> None:
        fields: dict[str, Any] = {"job": job.job_id, "model": job.model, "prov": job.provider}
        if job.data:
            fields["data"] = dict(job.data)
        cost = job.cost_usd if job.cost_usd is not None else self._est_usd
        if cost is not None:
            fields["cost_usd"] = cost
        if job.credits is not None:
            fields["credits"] = job.credits
        if reconciled:
            fields["reconciled"] = True
        await self._emit(Event.SUBMITTED, ShotState.POLLING, job.job_id, **fields)

    async def _submit_failed(self, exc: ProviderError) -> JobHandle:
        reason = str(exc)
        if isinstance(exc, NotSent | RateLimited):
            await self._emit(Event.SUBMIT_NOT_SENT, ShotState.PENDING, reason, reason=reason)
            raise exc  # retried by the caller's policy, same attempt and key
        if isinstance(exc, Rejected):
            self._release()
            await self._emit(
                Event.SUBMIT_REJECTED, ShotState.FAILED, reason, reason=reason, status=exc.status
            )
            raise _Stop
        await self._emit(Event.SUBMIT_AMBIGUOUS, ShotState.NEEDS_RECONCILE, reason, reason=reason)
        raise _Stop

    async def _reconcile(self) -> JobHandle | None:
        """An intent without outcome: adopt the job, prove there is none, or stop for the user."""
        rec = self.rec
        assert rec is not None
        assert rec.key is not None
        if self.ctx.supports(self.shot.provider, SupportsReconcile):
            since = (ts_epoch(rec.intent_ts) if rec.intent_ts else time.time()) - 60.0
            try:
                job = await cast(SupportsReconcile, self.provider).reconcile(
                    self.shot, key=rec.key, since=since
                )
            except ProviderError as exc:
                reason = f"submit outcome unknown after restart; reconcile failed: {exc}"
            else:
                if job is not None:
                    await self._record_submitted(job, reconciled=True)
                    return job
                reason = "submit was not received by the provider (reconciled after restart)"
                await self._emit(Event.SUBMIT_NOT_SENT, ShotState.PENDING, reason, reason=reason)
                rec.reuse_attempt = True
                return None
        else:
            reason = "submit outcome unknown after restart (intent without outcome)"
        await self._emit(Event.SUBMIT_AMBIGUOUS, ShotState.NEEDS_RECONCILE, reason, reason=reason)
        raise _Stop

    # ----- poll ---------------------------------------------------------------------------

    async def _poll(self, job: JobHandle) -> PollResult:
        settings = self.settings
        floor, ceiling = settings.poll_min_s or 2.0, settings.poll_max_s or 30.0
        deadline = job.submitted_at + (settings.poll_deadline_s or 3600.0)
        interval = floor
        last = ""
        while True:
            try:
                result: PollResult = await self._call(
                    lambda: self.provider.poll(job), CallKind.POLL, deadline
                )
            except JobFailed as exc:
                await self._fail(str(exc), _charged(exc.refunded))
            except ProviderError as exc:  # transient and retries exhausted: keep polling
                log.warning("%s: poll failed, will poll again: %s", self.shot.id, exc)
                result = PollResult(JobStatus.RUNNING, raw_status=last)
            if result.status == JobStatus.SUCCEEDED:
                await self._emit(Event.COMPLETED, ShotState.FETCHING, url=result.result_url)
                return result
            if result.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                await self._finished_without_video(result)
            if result.raw_status != last:
                last = result.raw_status
                await self.ctx.append(
                    Event.STATUS,
                    self.shot.id,
                    status=result.status.value,
                    raw=result.raw_status,
                    progress=result.progress,
                )
            now = time.time()
            if now >= deadline:
                await self._fail(
                    f"timed out: still {result.raw_status or 'running'} after "
                    f"{now - job.submitted_at:.0f} s (job {job.job_id} was charged)",
                    Charged.YES,
                )
            interval = _next_interval(interval, result.eta_s, floor, ceiling)
            if self.gate.breaker.state != BreakerState.CLOSED:
                interval = ceiling  # the provider is unwell: poll slower
            await anyio.sleep(min(interval, max(0.0, deadline - now)))

    async def _finished_without_video(self, result: PollResult) -> None:
        if result.status == JobStatus.CANCELLED:
            await self._emit(Event.CANCELLED, ShotState.CANCELLED, reason=result.message)
            raise _Stop
        await self._fail(
            result.message or "the provider reported the job failed", _charged(result.refunded)
        )

    def _fetch_pending(self, reason: str) -> None:
        """Leave the shot in ``fetching``: the video exists but could not be fetched now.

        ``resume`` tries the fetch again; it never becomes a new, paid attempt.
        """
        log.warning("%s: %s; run `pipeline resume` to fetch it again", self.shot.id, reason)
        self.ctx.observer.transition(self.shot, ShotState.FETCHING, reason)
        raise _Stop

    def _release(self) -> None:
        """Give the budget back: this shot's submit created nothing (or was refunded)."""
        if self._reserved:
            self.ctx.spend.release(self._est_usd)
            self._reserved = False
            self.ctx.observer.spending(self.ctx.spend.committed_usd, self.ctx.spend.limit_usd)

    async def _fail(self, reason: str, charged: Charged) -> NoReturn:
        if charged == Charged.NO:
            self._release()
        await self._emit(
            Event.FAILED, ShotState.FAILED, reason, reason=reason, charged=charged.value
        )
        raise _Stop

    # ----- fetch --------------------------------------------------------------------------

    async def _fetch(self, job: JobHandle, result: PollResult) -> None:
        final = output_path(self.ctx.run_dir, self.shot.id)  # its directory: see write_verified

        async def record(art: Artifact, publish: Callable[[], None]) -> None:
            rel = art.path.relative_to(self.ctx.run_dir).as_posix()
            # The rename to the final name runs in the checkpoint's writer thread right after
            # the fsync that makes ``fetched`` durable: one thread hop for both.
            await self._emit(
                Event.FETCHED,
                ShotState.DONE,
                rel,
                then=publish,
                path=rel,
                bytes=art.size,
                sha256=art.sha256,
            )

        # The video's own witness (shots/<id>.json, written before its rename): `pipeline
        # repair` rebuilds a truncated or lost log from these, so a verified video is never paid
        # for again. No secrets, no URLs.
        sidecar = scrub(  # a job id that echoes the key must not reach the file either
            {
                "v": 1,
                "shot": self.shot.id,
                "fingerprint": self.shot.fingerprint,
                "provider": job.provider,
                "model": job.model,
                "job": job.job_id,
                "run": self.ctx.run_id,
                "simulated": bool(getattr(self.ctx.options, "simulate", False)),
                "path": final.relative_to(self.ctx.run_dir).as_posix(),
            }
        )

        async def once() -> None:
            async with self.provider.fetch(job, result) as stream:
                await download.write_verified(
                    stream,
                    final,
                    max_bytes=self.ctx.downloads.max_bytes,
                    record=record,
                    expect=playable.Expected(self.shot.duration, self.shot.provider),
                    sidecar=sidecar,
                )

        async with self.gate.downloads:
            for _ in range(3):
                try:
                    await retry.call(lambda: self.calls.backoff(retry.idempotent_retryable), once)
                    break
                except ProviderError as exc:
                    if isinstance(exc, FetchError) and (
                        exc.rejected or isinstance(exc, playable.UnplayableVideo)
                    ):
                        # The video itself is refused (cap, not a video, private address; or
                        # still unplayable after the fetch retries): the job is paid: never
                        # resubmit.
                        await self._fail(f"download_rejected: {exc}", Charged.YES)
                    if not (isinstance(exc, FetchError) and exc.expired):
                        self._fetch_pending(f"fetch failed: {exc}")
                    result = await self._call(lambda: self.provider.poll(job), CallKind.POLL)
            else:
                self._fetch_pending("the result URL kept expiring (refreshed by polling 3 times)")
        if self.ctx.supports(self.shot.provider, SupportsCleanup):
            try:
                await cast(SupportsCleanup, self.provider).cleanup(job)
            except ProviderError as exc:
                log.warning("%s: cleanup at the provider failed: %s", self.shot.id, exc)


def _charged(refunded: bool | None) -> Charged:
    if refunded is None:
        return Charged.UNKNOWN
    return Charged.NO if refunded else Charged.YES


def _next_interval(current: float, eta_s: float | None, floor: float, ceiling: float) -> float:
    """Next poll wait in seconds, clamped to [floor, ceiling].

    With the provider's ETA hint: just after it, late by a random 0 to min(10 % of it, floor)
    (shots with the same ETA spread over up to one floor interval, and a job is never found
    more than that late). Without: x1.5 backoff with +-20 % jitter, so that many shots
    submitted together do not poll in lockstep.
    """
    if eta_s is not None and eta_s > 0:
        # Trust the provider's estimate: poll just after it (never early).
        late = random.uniform(0.0, min(0.1 * eta_s, floor))
        return min(max(eta_s + late, floor), ceiling)
    base = min(max(current * 1.5, floor), ceiling)
    return min(max(base * random.uniform(0.8, 1.2), floor), ceiling)
