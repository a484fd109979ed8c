"""Retry policy: which failures are retried, how long to wait, and for how long in total.

Built on stamina (attempts and a deadline per operation; ``stamina.set_testing`` skips the waits
in tests) with a backoff hook that computes the wait itself:

- **full jitter**: ``uniform(0, min(cap, base * 2**n))`` (AWS "exponential backoff and jitter");
- a provider's ``Retry-After`` is a **floor** under that wait, and pauses every call to the
  provider (the shared gate, :meth:`pipeline.engine.limits.ProviderGate.pause`); it is honoured up
  to
  ``max_retry_after_s`` (a larger one is clamped);
- an operation with a **deadline** (a poll: its job's poll deadline) gives up rather than wait
  past it;
- a **retry budget** per provider (:class:`pipeline.engine.limits.RetryBudget`): when retries outrun
  10 % of successful calls, the operation fails now instead of adding to a retry storm.

Only calls that are safe to repeat are retried:

- submit: only :class:`~pipeline.errors.NotSent` (the request never left) and
  :class:`~pipeline.errors.RateLimited` (the provider created nothing). Never ``Ambiguous``.
- poll / fetch / upload / quote (idempotent): also ``Ambiguous`` (5xx, resets, timeouts) and
  transfer failures. Never a definite 4xx (Venice counts failed 4xx against an error budget).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from pipeline.engine.clock import Clock
from pipeline.errors import Ambiguous, FetchError, NotSent, RateLimited
from pipeline.settings import RetryPolicy
from pipeline.transfer.storage import StorageError

if TYPE_CHECKING:  # imported when a call first fails: not on every command's start-up path
    import stamina

#: The retry policy of a provider whose settings say nothing (the settings' defaults).
DEFAULT_POLICY = RetryPolicy()


def submit_retryable(exc: Exception) -> bool:
    """Submits are retried only when provably nothing was created (never on ambiguity)."""
    return isinstance(exc, NotSent | RateLimited)


def idempotent_retryable(exc: Exception) -> bool:
    """Free, repeatable calls (poll, fetch, upload, quote): also transient server trouble."""
    if isinstance(exc, FetchError):
        return not exc.rejected  # an expired URL: the fetch polls for a fresh one first
    if isinstance(exc, StorageError):
        return exc.retryable
    return isinstance(exc, NotSent | Ambiguous | RateLimited)


class BudgetLike(Protocol):
    """What :class:`Backoff` needs of a retry budget (see ``engine.limits.RetryBudget``)."""

    def try_spend(self) -> bool:
        """Take one retry token; False when the budget is exhausted."""
        ...


class Backoff:
    """A stamina backoff hook for one operation: full jitter, Retry-After floor, retry budget.

    Args:
        retryable: which exceptions may be retried at all.
        policy: attempts and wait bounds (the provider's ``retry`` settings).
        budget: the provider's retry budget (None: unlimited).
        on_rate_limit: called with the Retry-After seconds of a 429 (the shared pause).
        max_retry_after_s: longest Retry-After honoured (a larger one is clamped to it).
        deadline: ``clock.time()`` past which no retry waits (None: the policy's timeout only).
        clock: the run's clock (a new one when None).
    """

    def __init__(
        self,
        retryable: Callable[[Exception], bool],
        policy: RetryPolicy = DEFAULT_POLICY,
        *,
        budget: BudgetLike | None = None,
        on_rate_limit: Callable[[float], None] | None = None,
        max_retry_after_s: float = 600.0,
        deadline: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.retryable = retryable
        self.policy = policy
        self.budget = budget
        self.on_rate_limit = on_rate_limit
        self.max_retry_after_s = max_retry_after_s
        self.deadline = deadline
        self.retries = 0

    def __call__(self, exc: Exception) -> bool | float:
        """False: give up now; a float: retry after that many seconds."""
        if not self.retryable(exc):
            return False
        # 429s are bounded by the shared pause and the attempt limit; other retries by the budget.
        limited = isinstance(exc, RateLimited)
        if self.budget is not None and not limited and not self.budget.try_spend():
            return False
        ceiling = min(self.policy.wait_max_s, self.policy.wait_initial_s * 2**self.retries)
        wait = random.uniform(0.0, ceiling)
        self.retries += 1
        if isinstance(exc, RateLimited):
            floor = exc.retry_after if exc.retry_after is not None else 1.0
            if self.on_rate_limit is not None:
                self.on_rate_limit(floor)  # the gate clamps (and logs) on its own
            wait = max(wait, min(floor, self.max_retry_after_s))
        if self.deadline is not None and self.clock.time() + wait > self.deadline:
            return False  # the wait would outlast the operation's deadline
        return wait


def attempts(hook: Backoff, skip: int = 0) -> AsyncIterator[stamina.Attempt]:
    """A stamina retry context driven by ``hook`` (its policy's bounds), ``skip`` tries fewer."""
    import stamina

    policy = hook.policy
    return stamina.retry_context(
        on=hook,
        attempts=max(1, policy.attempts - skip),
        timeout=policy.timeout_s,
        wait_initial=policy.wait_initial_s,
        wait_max=policy.wait_max_s,
    )


T = TypeVar("T")


async def call(hook: Callable[[], Backoff], fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()``, retried as ``hook()`` decides, within the attempts of its policy.

    The first try runs bare: the stamina retry loop (a few hundred function calls to set up) is
    only built once it has failed, and ``hook`` is only called then, so the common case (no
    failure) costs one call. Later tries go through :func:`attempts` with one attempt fewer.

    Raises:
        Exception: the first failure the hook does not retry, or the last one.
    """
    try:
        return await fn()
    except Exception as exc:
        backoff = hook()
        wait = backoff(exc)
        if wait is False or backoff.policy.attempts <= 1:
            raise
        await backoff.clock.sleep(0.0 if testing() else float(wait))
    async for attempt in attempts(backoff, skip=1):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover


def testing() -> bool:
    """True inside ``stamina.set_testing`` (waits are skipped)."""
    import stamina

    return stamina.is_testing()
