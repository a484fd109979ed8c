"""Per-provider gates: job slots, request-rate limiters and a shared 429 pause.

One :class:`ProviderGate` is built per provider per run. Two different things are limited:

- jobs in flight at the provider (``max_in_flight``): a slot is held from just before the submit
  intent until the job is terminal, because that is the provider's per-account concurrency;
- HTTP requests: ``requests_per_minute`` for submits and ``polls_per_minute`` for polls, each a
  strict leaky bucket (no bursts, so no sliding 60 s window ever exceeds the rate), plus caps on
  concurrent uploads and downloads.

A 429 (or any Retry-After) from any call pauses *every* call to that provider until the deadline.
Nothing sleeps while holding an HTTP slot. A pause is at most ``max_retry_after_s`` (default
600 s; a larger Retry-After is clamped, logged once), and a call with a deadline (a poll: its
job's poll deadline) never waits past it: :meth:`ProviderGate.ready` raises
:class:`PausedPastDeadline` at the deadline instead, so a pause caused by submits cannot keep a
paid job polling past its deadline.

Two guards against spending into an outage (README "Reliability", R10):

- :class:`RetryBudget`: retries cost a token, successful calls refill 10 % of one; an exhausted
  budget fails operations at once instead of multiplying load on a sick provider;
- :class:`CircuitBreaker`: 5 consecutive server errors or timeouts within 60 s open it; while
  open no *paid* call starts (polls go on, slower); after 30 s one *free* call (a poll or the
  adapter's probe) may test the provider, and its success closes the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from enum import StrEnum
from types import TracebackType

import anyio
from aiolimiter import AsyncLimiter

from pipeline.engine.clock import Clock
from pipeline.errors import ProviderError
from pipeline.settings import BreakerPolicy, ProviderSettings

log = logging.getLogger(__name__)


class PausedPastDeadline(ProviderError):
    """The call's deadline came first: the provider's pause (or rate limit) outlasts it.

    Not retryable and not an outage; a poll loop treats it as a failed poll and then ends at
    its deadline with its usual timeout failure.
    """


class CallKind(StrEnum):
    """Endpoint classes that are rate-limited separately."""

    SUBMIT = "submit"
    POLL = "poll"
    OTHER = "other"


def _limiter(per_minute: float | None) -> AsyncLimiter | None:
    """A strict limiter spacing calls 60/per_minute seconds apart, or None for unlimited."""
    if per_minute is None:
        return None
    return AsyncLimiter(1, 60.0 / per_minute)


class RetryBudget:
    """A token bucket of retries: ``initial`` tokens, +``ratio`` per success, at most ``cap``.

    Args:
        initial: tokens at the start (lets a fresh run ride out a short blip).
        ratio: tokens a successful call adds (0.1: retries may be 10 % of successes).
        cap: most tokens kept.
    """

    def __init__(self, initial: float = 10.0, ratio: float = 0.1, cap: float = 100.0) -> None:
        self.tokens = initial
        self.ratio = ratio
        self.cap = cap
        self.denied = 0

    def success(self) -> None:
        """A call succeeded: refill a little."""
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take one token for a retry; False (and counted in ``denied``) when none is left."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.denied += 1
        return False


class BreakerState(StrEnum):
    """States of a :class:`CircuitBreaker`."""

    CLOSED = "closed"  #: normal
    OPEN = "open"  #: no paid calls until the cool-down ends
    HALF_OPEN = "half_open"  #: cool-down over: a free call decides


class CircuitBreaker:
    """Stops paid calls to a provider that keeps failing (see the module docstring).

    Args:
        policy: threshold (consecutive failures: 5xx, timeouts), the window they must fall
            within and the cool-down before a free probe, in seconds.
        clock: the run's clock.
    """

    def __init__(self, policy: BreakerPolicy, clock: Clock) -> None:
        self.threshold = policy.threshold
        self.window_s = policy.window_s
        self.cooldown_s = policy.cooldown_s
        self.clock = clock
        self._failures: list[float] = []
        self._opened_at: float | None = None
        self.opened = 0  # how many times it opened

    @property
    def state(self) -> BreakerState:
        """The current state (open turns half-open by itself when the cool-down is over)."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock.monotonic() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def failure(self) -> None:
        """A call failed with a server error or a timeout."""
        now = self.clock.monotonic()
        if self._opened_at is not None:
            self._opened_at = now  # a failed probe: stay open for another cool-down
            return
        self._failures = [t for t in self._failures if now - t < self.window_s] + [now]
        if len(self._failures) >= self.threshold:
            self._opened_at = now
            self.opened += 1

    def success(self) -> None:
        """A call succeeded: the provider answers; close."""
        self._failures.clear()
        self._opened_at = None

    def seconds_left(self) -> float:
        """Seconds until a probe may be tried (0.0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock.monotonic() - self._opened_at))


class Slots:
    """``n`` slots taken with ``async with``, counting how many are in use.

    An ``asyncio.Semaphore`` (FIFO waiters) rather than ``anyio.CapacityLimiter``: an anyio
    acquire always yields to the event loop once, even when a slot is free, and every shot takes
    two or three of these. Cancellation (an anyio cancel scope cancels the task) frees the wait.
    """

    def __init__(self, n: int) -> None:
        self.total = n
        self.in_use = 0
        self._sem = asyncio.Semaphore(n)

    async def __aenter__(self) -> None:
        await self._sem.acquire()
        self.in_use += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.in_use -= 1
        self._sem.release()


class ProviderGate:
    """Concurrency and rate limits of one provider, shared by every shot of the run.

    Args:
        name: provider registry name (for messages).
        settings: merged provider settings (slots, rates, retry policy, breaker).
        clock: the run's clock (a new :class:`~pipeline.engine.clock.Clock` when None).
    """

    def __init__(self, name: str, settings: ProviderSettings, clock: Clock | None = None) -> None:
        self.name = name
        self.clock = clock = clock or Clock()
        self.jobs = Slots(settings.max_in_flight)
        self.uploads = Slots(settings.max_uploads)
        self.downloads = Slots(settings.max_downloads)
        self._rates = {
            CallKind.SUBMIT: _limiter(settings.requests_per_minute),
            CallKind.POLL: _limiter(settings.polls_per_minute),
            CallKind.OTHER: None,
        }
        self._paused_until = -math.inf  # clock.monotonic() deadline
        self.max_retry_after_s = settings.max_retry_after_s
        self._clamp_logged = False
        rpm = settings.requests_per_minute
        self._send_spacing_s = 60.0 / rpm if rpm else 0.0
        self._last_send = -math.inf  # clock.monotonic() of the last paid send
        self.retry = settings.retry
        self.budget = RetryBudget(settings.retry.budget_initial, settings.retry.budget_ratio)
        self.breaker = CircuitBreaker(settings.breaker, self.clock)
        self.probe_lock = anyio.Lock()
        #: Shots waiting now on the shared pause / on the open circuit breaker (for reports).
        self.waiting_pause = 0
        self.waiting_breaker = 0

    async def pace_send(self) -> None:
        """Keep paid sends ``60 / requests_per_minute`` s apart as they leave (no-op if unlimited).

        ``ready(SUBMIT)`` paces when a submit may *start*; the submit then makes its intent
        durable, an fsync whose length varies (a few ms, more on a busy disk), so two sends
        could leave closer together than the limit and a provider counting a sliding window
        would see one call too many (README "Reliability", R9). Called after the intent, right
        before the POST: it waits at most about one spacing, as ``ready`` already paced the starts.
        """
        if not self._send_spacing_s:
            return
        # Each send reserves its slot before it sleeps, so concurrent sends queue up in order
        # and one sleep suffices (no re-check loop that a coarse clock could spin in).
        clock = self.clock
        slot = max(clock.monotonic(), self._last_send + self._send_spacing_s)
        self._last_send = slot
        await clock.sleep(slot - clock.monotonic())

    def clamp(self, seconds: float) -> float:
        """``seconds`` of a Retry-After, at most ``max_retry_after_s`` (the first clamp logged)."""
        if seconds <= self.max_retry_after_s:
            return max(0.0, seconds)
        if not self._clamp_logged:
            self._clamp_logged = True
            log.warning(
                "%s asked to wait %.0f s (Retry-After); waiting at most %.0f s "
                "(providers.%s.max_retry_after_s)",
                self.name,
                seconds,
                self.max_retry_after_s,
                self.name,
            )
        return self.max_retry_after_s

    def pause(self, seconds: float) -> None:
        """Stop every call to this provider for ``seconds``, clamped to ``max_retry_after_s``.

        Extends, never shortens, a pause.
        """
        until = self.clock.monotonic() + self.clamp(seconds)
        self._paused_until = max(self._paused_until, until)

    @property
    def paused_for(self) -> float:
        """Seconds left in the current shared pause (0.0 when not paused)."""
        return max(0.0, self._paused_until - self.clock.monotonic())

    async def _wait_pause(self, deadline: float | None = None) -> None:
        """Sleep until no shared pause is in force (a pause may be extended while we sleep).

        Raises:
            PausedPastDeadline: still paused at ``deadline`` (``clock.time()`` seconds).
        """
        if self.paused_for <= 0:
            return
        self.waiting_pause += 1
        try:
            while (left := self.paused_for) > 0:  # a pause may be extended while we sleep
                if deadline is not None:
                    until_deadline = deadline - self.clock.time()
                    if until_deadline <= 0:
                        raise PausedPastDeadline(
                            f"{self.name} is paused (429) for {left:.0f} s more, past this "
                            "call's deadline",
                            provider=self.name,
                        )
                    left = min(left, until_deadline)
                await self.clock.sleep(left)
        finally:
            self.waiting_pause -= 1

    async def ready(self, kind: CallKind, deadline: float | None = None) -> None:
        """Wait until a call of ``kind`` may start: after any shared pause, within the rate.

        Args:
            kind: which rate limit applies.
            deadline: ``clock.time()`` after which the call is pointless (a poll: its job's poll
                deadline); None: bounded by ``max_retry_after_s`` and the rate only.

        Raises:
            PausedPastDeadline: the pause or the rate limiter would outlast ``deadline``.
        """
        await self._wait_pause(deadline)
        limiter = self._rates[kind]
        if limiter is not None:
            if deadline is None or limiter.has_capacity():  # no wait: no cancel scope to set up
                await limiter.acquire()
            else:
                with anyio.move_on_after(max(0.0, deadline - self.clock.time())) as scope:
                    await limiter.acquire()
                if scope.cancelled_caught:
                    raise PausedPastDeadline(
                        f"{self.name}: no {kind} slot in the rate limit before the deadline",
                        provider=self.name,
                    )
            await self._wait_pause(deadline)  # a pause may have started while we waited

    def waits(self) -> list[str]:
        """What this provider's shots are waiting on besides their jobs, one phrase each.

        E.g. ``["3 shot(s) on a 429 pause until 14:32:10"]``; empty when nothing waits.
        """
        out = []
        if self.waiting_pause and (left := self.paused_for) > 0:
            out.append(f"{self.waiting_pause} shot(s) on a 429 pause until {_clock(left)}")
        if self.waiting_breaker:
            left = self.breaker.seconds_left()
            when = f"a probe at {_clock(left)}" if left > 0 else "a probe now"
            out.append(
                f"{self.waiting_breaker} shot(s) on the circuit breaker (the provider kept "
                f"failing; {when})"
            )
        return out

    @property
    def in_flight(self) -> int:
        """Jobs currently holding a slot."""
        return self.jobs.in_use


def _clock(seconds_from_now: float) -> str:
    """Local wall-clock time ``seconds_from_now`` from now, as ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() + seconds_from_now))
