"""Polling a submitted job: when to ask again, and when to give up (the poll deadline)."""

from __future__ import annotations

import logging

from pipeline.engine import pollsched
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
        """Poll ``job`` on the learned schedule (``engine.pollsched``) until it is terminal.

        Raises:
            Stop: the job failed, was cancelled or outlived its poll deadline (recorded).
        """
        policy = self.settings.polling
        deadline = job.submitted_at + policy.deadline_s
        clock = self.gate.clock
        times = self.ctx.history.times(job.provider, job.model)
        interval = policy.min_s
        await clock.sleep(pollsched.first_delay(clock.time() - job.submitted_at, times, policy))
        running_at: float | None = None  # elapsed at the last poll that found it unfinished
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
            now = clock.time()
            elapsed = now - job.submitted_at
            if result.status == JobStatus.SUCCEEDED:
                if running_at is not None:  # seen running, then done: it finished in between
                    times.add((running_at + elapsed) / 2)
                await self._emit(Event.COMPLETED, ShotState.FETCHING, url=result.result_url)
                return result
            if result.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                await self._finished_without_video(result)
            running_at = elapsed
            if result.raw_status != last:
                last = result.raw_status
                await self.ctx.append(
                    Event.STATUS,
                    self.shot.id,
                    status=result.status.value,
                    raw=result.raw_status,
                    progress=result.progress,
                )
            if now >= deadline:
                await self._fail(
                    f"timed out: still {result.raw_status or 'running'} after "
                    f"{elapsed:.0f} s (job {job.job_id} was charged)",
                    Charged.YES,
                )
            interval = pollsched.next_delay(
                elapsed, interval, times, policy, self._poll_floor(policy.min_s), result.eta_s
            )
            if self.gate.breaker.state != BreakerState.CLOSED:
                interval = policy.max_s  # the provider is unwell: poll slower
            await clock.sleep(min(interval, max(0.0, deadline - now)))

    def _poll_floor(self, poll_min_s: float) -> float:
        """The shortest poll wait now, in seconds.

        ``poll_min_s``, or longer when the provider's polls-per-minute, shared by every job in
        flight, would not allow it.
        """
        per_minute = self.settings.polls_per_minute
        if not per_minute:
            return poll_min_s
        return max(poll_min_s, self.gate.jobs.in_use * 60.0 / per_minute)

    async def _finished_without_video(self, result: PollResult) -> None:
        if result.status == JobStatus.CANCELLED:
            await self._emit(Event.CANCELLED, ShotState.CANCELLED, reason=result.message)
            raise Stop
        await self._fail(
            result.message or "the provider reported the job failed", charged_of(result.refunded)
        )
