"""Retry policy: which failures are retried, how long to wait, and for how long in total.

Built on stamina (exponential backoff with jitter, attempts and a deadline per operation). Only
calls that are safe to repeat are retried:

- submit: only :class:`~pipeline.errors.NotSent` (the request never left) and
  :class:`~pipeline.errors.RateLimited` (the provider created nothing). Never ``Ambiguous``.
- poll / fetch / upload / quote (idempotent): also ``Ambiguous`` (5xx, resets, timeouts) and
  transfer failures. Never a definite 4xx (Venice counts failed 4xx against an error budget).

A Retry-After from the provider is a floor under the wait.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import stamina

from pipeline.errors import Ambiguous, FetchError, NotSent, RateLimited


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of one retried operation.

    ``attempts`` tries within ``timeout_s`` seconds; waits grow from ``wait_initial_s`` to
    ``wait_max_s`` with up to ``wait_jitter_s`` seconds of jitter.
    """

    attempts: int = 5
    timeout_s: float = 600.0
    wait_initial_s: float = 1.0
    wait_max_s: float = 60.0
    wait_jitter_s: float = 1.0


DEFAULT_POLICY = RetryPolicy()


def _rate_limited_wait(exc: RateLimited) -> float:
    return (exc.retry_after if exc.retry_after is not None else 1.0) + random.uniform(0.0, 1.0)


def submit_retryable(exc: Exception) -> bool | float:
    """Stamina backoff hook for submits: retry only what provably created nothing."""
    if isinstance(exc, RateLimited):
        return _rate_limited_wait(exc)
    return isinstance(exc, NotSent)


def idempotent_retryable(exc: Exception) -> bool | float:
    """Stamina backoff hook for free, repeatable calls (poll, fetch, upload, quote)."""
    if isinstance(exc, RateLimited):
        return _rate_limited_wait(exc)
    if isinstance(exc, FetchError):
        return not exc.expired
    return isinstance(exc, NotSent | Ambiguous)


BackoffHook = Callable[[Exception], bool | float]


def attempts(
    hook: BackoffHook, policy: RetryPolicy = DEFAULT_POLICY
) -> AsyncIterator[stamina.Attempt]:
    """A stamina retry context under ``policy``, for ``async for attempt in ...`` loops."""
    return stamina.retry_context(
        on=hook,
        attempts=policy.attempts,
        timeout=policy.timeout_s,
        wait_initial=policy.wait_initial_s,
        wait_max=policy.wait_max_s,
        wait_jitter=policy.wait_jitter_s,
    )
