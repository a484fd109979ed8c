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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
import stamina

from pipeline.errors import Ambiguous, FetchError, NotSent, RateLimited
from pipeline.transfer.storage import StorageError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of one retried operation.

    ``attempts`` tries within ``timeout_s`` seconds; the n-th wait is drawn from
    ``[0, min(wait_max_s, wait_initial_s * 2**n)]``.
    """

    attempts: int = 5
    timeout_s: float = 600.0
    wait_initial_s: float = 1.0
    wait_max_s: float = 60.0


DEFAULT_POLICY = RetryPolicy()


def submit_retryable(exc: Exception) -> bool:
    """Submits are retried only when provably nothing was created (never on ambiguity)."""
    return isinstance(exc, NotSent | RateLimited)


def idempotent_retryable(exc: Exception) -> bool:
    """Free, repeatable calls (poll, fetch, upload, quote): also transient server trouble."""
    if isinstance(exc, FetchError):
        return not (exc.expired or exc.rejected)
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
        policy: wait bounds.
        budget: the provider's retry budget (None: unlimited).
        on_rate_limit: called with the Retry-After seconds of a 429 (the shared pause).
        max_retry_after_s: longest Retry-After honoured (a larger one is clamped to it).
        deadline: ``time.time()`` past which no retry waits (None: the policy's timeout only).
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
    ) -> None:
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
        if self.deadline is not None and time.time() + wait > self.deadline:
            return False  # the wait would outlast the operation's deadline
        return wait


def attempts(hook: Backoff, policy: RetryPolicy = DEFAULT_POLICY) -> AsyncIterator[stamina.Attempt]:
    """A stamina retry context driven by ``hook``, for ``async for attempt in ...`` loops."""
    return stamina.retry_context(
        on=hook,
        attempts=policy.attempts,
        timeout=policy.timeout_s,
        wait_initial=policy.wait_initial_s,
        wait_max=policy.wait_max_s,
    )


#: The rest of an operation after a first, unwrapped try failed (the fast path of
#: :func:`call`): one attempt fewer.
AFTER_FIRST = RetryPolicy(attempts=DEFAULT_POLICY.attempts - 1)

T = TypeVar("T")


async def call(hook: Callable[[], Backoff], fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()``, retried as ``hook()`` decides (attempts and deadline of DEFAULT_POLICY).

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
        if wait is False:
            raise
        await anyio.sleep(0.0 if testing() else float(wait))
    async for attempt in attempts(backoff, AFTER_FIRST):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")  # pragma: no cover


def testing() -> bool:
    """True inside ``stamina.set_testing`` (waits are skipped)."""
    return stamina.is_testing()
