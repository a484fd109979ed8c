"""Guarded provider calls: every call goes through the provider's gate, retry policy and breaker.

:class:`GuardedCalls` is what a shot's stage machine uses to talk to its provider:

- :meth:`GuardedCalls.call` for free, idempotent calls (poll, quote, fetch setup, uploads):
  waits for the shared pause and the rate limiter, retries with full jitter inside the retry
  budget, and feeds the circuit breaker (server errors and timeouts count, answers do not);
- :meth:`GuardedCalls.wait_closed` before every paid call: while the breaker is open no submit
  starts; when its cool-down is over one free probe (:class:`SupportsProbe`) may close it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.engine import retry
from pipeline.engine.limits import BreakerState, CallKind, ProviderGate
from pipeline.errors import Ambiguous, NotSent, ProviderError
from pipeline.providers.base import Provider, SupportsProbe

#: How often a shot waiting on an open breaker looks again when it cannot probe itself (s).
BREAKER_RECHECK_S = 1.0


def outage(exc: BaseException) -> bool:
    """True for failures that say the provider is unwell (5xx, timeouts, resets, refused)."""
    return isinstance(exc, Ambiguous | NotSent)


class GuardedCalls:
    """One provider's calls on behalf of one shot (cheap: the gate is shared)."""

    def __init__(self, provider: Provider, gate: ProviderGate) -> None:
        self.provider = provider
        self.gate = gate

    def backoff(
        self, retryable: Callable[[Exception], bool], deadline: float | None = None
    ) -> retry.Backoff:
        """A backoff hook for one operation, charged to this provider's retry budget.

        The provider's retry policy; Retry-After is honoured up to the gate's
        ``max_retry_after_s``; with a ``deadline`` (``clock.time()``) no retry waits past it.
        """
        return retry.Backoff(
            retryable,
            self.gate.retry,
            clock=self.gate.clock,
            budget=self.gate.budget,
            on_rate_limit=self.gate.pause,
            max_retry_after_s=self.gate.max_retry_after_s,
            deadline=deadline,
        )

    async def call(
        self,
        fn: Callable[[], Awaitable[Any]],
        kind: CallKind = CallKind.OTHER,
        *,
        provider_health: bool = True,
        deadline: float | None = None,
    ) -> Any:
        """Run a free, idempotent call under the gate, retried per the retry policy.

        Args:
            fn: the call.
            kind: which rate limit applies.
            provider_health: whether its outcome says something about the provider (False for
                object-storage uploads).
            deadline: ``clock.time()`` past which neither the gate nor a retry waits (a poll:
                its job's poll deadline).

        Raises:
            PausedPastDeadline: the provider's pause or rate limit outlasts ``deadline``.
            ProviderError: the last failure once retries are exhausted or not allowed.
        """
        breaker, budget = self.gate.breaker, self.gate.budget

        async def once() -> Any:
            await self.gate.ready(kind, deadline)
            try:
                result = await fn()
            except ProviderError as exc:
                if provider_health and outage(exc):
                    breaker.failure()
                raise
            if provider_health:
                breaker.success()
            budget.success()
            return result

        return await retry.call(lambda: self.backoff(retry.idempotent_retryable, deadline), once)

    def record(self, outcome: object) -> None:
        """Feed a paid call's outcome (a job, or the error) to the breaker and the budget."""
        if isinstance(outcome, BaseException):
            if outage(outcome):
                self.gate.breaker.failure()
            return
        self.gate.breaker.success()
        self.gate.budget.success()

    async def wait_closed(self, deadline_s: float) -> bool:
        """Wait until paid calls may start; probe with a free call when the cool-down is over.

        Returns:
            True when the breaker is closed; False when ``deadline_s`` seconds passed first.
        """
        breaker, clock = self.gate.breaker, self.gate.clock
        until = clock.monotonic() + deadline_s
        counted = False  # counted among the shots waiting on the breaker (for reports)
        try:
            while (state := breaker.state) != BreakerState.CLOSED:
                if not counted:
                    self.gate.waiting_breaker += 1
                    counted = True
                if clock.monotonic() >= until:
                    return False
                if state == BreakerState.HALF_OPEN and isinstance(self.provider, SupportsProbe):
                    await self._probe(self.provider)
                    continue
                wait = breaker.seconds_left() or BREAKER_RECHECK_S
                await clock.sleep(min(wait, max(0.0, until - clock.monotonic())))
            return True
        finally:
            if counted:
                self.gate.waiting_breaker -= 1

    async def _probe(self, provider: SupportsProbe) -> None:
        async with self.gate.probe_lock:  # one probe at a time per provider
            if self.gate.breaker.state != BreakerState.HALF_OPEN:
                return
            await self.gate.ready(CallKind.OTHER)
            try:
                await provider.probe()
            except ProviderError:
                self.gate.breaker.failure()  # still unwell: another cool-down
            else:
                self.gate.breaker.success()
