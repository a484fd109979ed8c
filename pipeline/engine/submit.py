"""The paid step of a shot: submit with a durable intent first, and reconcile after a restart.

Money rules (README, resume semantics): a ``submit_intent`` is durable before every POST; only a
submit that provably created nothing (``NotSent``, 429) is tried again, as the same attempt and
key; anything ambiguous ends in ``needs_reconcile`` unless the provider can prove what happened
(:class:`~pipeline.providers.base.SupportsReconcile`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio

from pipeline.engine import pricing, retry
from pipeline.engine.limits import CallKind
from pipeline.engine.shot_base import ShotBase, Stop
from pipeline.errors import (
    Ambiguous,
    NotSent,
    ProviderError,
    RateLimited,
    Rejected,
)
from pipeline.journal.checkpoint import ts_epoch
from pipeline.models import (
    Event,
    JobHandle,
    MediaRef,
    ShotState,
)
from pipeline.providers.base import (
    SupportsQuote,
    SupportsReconcile,
)

log = logging.getLogger("pipeline")

#: Longest a submit may stay shielded from cancellation before it is recorded as ambiguous.
SUBMIT_SHIELD_S = 300.0


class SubmitStage(ShotBase):
    """Submit (intent, POST, outcome) and reconcile after a restart."""

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
            raise Stop
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
            raise Stop from None

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
        deadline = self.settings.poll_deadline_s
        if not await self.calls.wait_closed(deadline):
            reason = (
                f"{self.shot.provider} kept failing (circuit breaker open for {deadline:.0f} s); "
                "not submitted: run again later"
            )
            log.warning("%s: %s", self.shot.id, reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, reason)
            raise Stop

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
            raise Stop
        await self._emit(Event.SUBMIT_AMBIGUOUS, ShotState.NEEDS_RECONCILE, reason, reason=reason)
        raise Stop

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
        raise Stop
