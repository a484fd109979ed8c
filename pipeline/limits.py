"""Per-provider gates: job slots, request-rate limiters and a shared 429 pause.

One :class:`ProviderGate` is built per provider per run. Two different things are limited:

- jobs in flight at the provider (``max_in_flight``): a slot is held from just before the submit
  intent until the job is terminal, because that is the provider's per-account concurrency;
- HTTP requests: ``requests_per_minute`` for submits and ``polls_per_minute`` for polls, each a
  strict leaky bucket (no bursts, so no sliding 60 s window ever exceeds the rate), plus caps on
  concurrent uploads and downloads.

A 429 (or any Retry-After) from any call pauses *every* call to that provider until the deadline.
Nothing sleeps while holding an HTTP slot.
"""

from __future__ import annotations

import time
from enum import StrEnum

import anyio
from aiolimiter import AsyncLimiter

from pipeline.settings import ProviderSettings


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


class ProviderGate:
    """Concurrency and rate limits of one provider, shared by every shot of the run.

    Args:
        name: provider registry name (for messages).
        settings: merged provider settings; ``max_in_flight`` defaults to 4, uploads and
            downloads to 4 each.
    """

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        self.name = name
        self.jobs = anyio.CapacityLimiter(settings.max_in_flight or 4)
        self.uploads = anyio.CapacityLimiter(settings.max_uploads or 4)
        self.downloads = anyio.CapacityLimiter(settings.max_downloads or 4)
        self._rates = {
            CallKind.SUBMIT: _limiter(settings.requests_per_minute),
            CallKind.POLL: _limiter(settings.polls_per_minute),
            CallKind.OTHER: None,
        }
        self._paused_until = 0.0  # time.monotonic() deadline

    def pause(self, seconds: float) -> None:
        """Stop every call to this provider for ``seconds`` (extends, never shortens, a pause)."""
        self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))

    @property
    def paused_for(self) -> float:
        """Seconds left in the current shared pause (0.0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    async def _wait_pause(self) -> None:
        """Sleep until no shared pause is in force (a pause may be extended while we sleep)."""
        while True:
            left = self.paused_for
            if left <= 0:
                return
            await anyio.sleep(left)

    async def ready(self, kind: CallKind) -> None:
        """Wait until a call of ``kind`` may start: after any shared pause, within the rate."""
        await self._wait_pause()
        limiter = self._rates[kind]
        if limiter is not None:
            await limiter.acquire()
            await self._wait_pause()  # a pause may have started while we waited

    @property
    def in_flight(self) -> int:
        """Jobs currently holding a slot."""
        return int(self.jobs.borrowed_tokens)
