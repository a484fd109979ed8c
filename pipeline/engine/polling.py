"""Polling a submitted job: when to ask again, and when to give up (the poll deadline)."""

from __future__ import annotations

import logging
import random

from pipeline.engine.limits import BreakerState, CallKind
from pipeline.engine.shot_base import ShotBase, Stop, charged_of
from pipeline.errors import (
    JobFailed,
    ProviderError,
)
from pipeline.models import (
    Charged,
    Event,
    JobHandle,
    JobStatus,
    PollResult,
    ShotState,
)

log = logging.getLogger("pipeline")


class PollStage(ShotBase):
    """Poll a submitted job until it is terminal or past its deadline."""

    async def _poll(self, job: JobHandle) -> PollResult:
        policy = self.settings.polling
        floor, ceiling = policy.min_s, policy.max_s
        deadline = job.submitted_at + policy.deadline_s
        clock = self.gate.clock
        interval = floor
        last = ""
        while True:
            try:
                result: PollResult = await self._call(
                    lambda: self.provider.poll(job), CallKind.POLL, deadline
                )
            except JobFailed as exc:
                await self._fail(str(exc), charged_of(exc.refunded))
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
            now = clock.time()
            if now >= deadline:
                await self._fail(
                    f"timed out: still {result.raw_status or 'running'} after "
                    f"{now - job.submitted_at:.0f} s (job {job.job_id} was charged)",
                    Charged.YES,
                )
            interval = next_interval(interval, result.eta_s, floor, ceiling)
            if self.gate.breaker.state != BreakerState.CLOSED:
                interval = ceiling  # the provider is unwell: poll slower
            await clock.sleep(min(interval, max(0.0, deadline - now)))

    async def _finished_without_video(self, result: PollResult) -> None:
        if result.status == JobStatus.CANCELLED:
            await self._emit(Event.CANCELLED, ShotState.CANCELLED, reason=result.message)
            raise Stop
        await self._fail(
            result.message or "the provider reported the job failed", charged_of(result.refunded)
        )


def next_interval(current: float, eta_s: float | None, floor: float, ceiling: float) -> float:
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
