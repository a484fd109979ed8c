"""The run's clock: what gates, the poll loop, retries and the circuit breaker read and wait on.

One :class:`Clock` is made per run and handed to every provider gate (and, through it, to the
breaker, the guarded calls and each shot's poll loop), so time has one home. It reads the
running event loop's clock, which in production is ``time.monotonic()``; a test that runs the
loop on fast-forwarded time (``looptime``) moves every deadline, rate window and cool-down of
the run with it, exactly, instead of waiting on the wall clock with slack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Clock:
    """Monotonic seconds, wall-clock seconds and sleep, all on the running event loop's clock.

    Call from inside the event loop (every method needs a running loop).
    """

    def __init__(self) -> None:
        #: (loop time, time.time()) taken together: when the clock was made inside the event
        #: loop (as a run makes it), else at its first use.
        self._anchor: tuple[float, float] | None = None
        with contextlib.suppress(RuntimeError):
            self._anchor = (asyncio.get_running_loop().time(), time.time())

    def monotonic(self) -> float:
        """Seconds on the loop's monotonic clock (only differences mean anything)."""
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        """Seconds since the epoch, advancing with :meth:`monotonic` from the clock's anchor.

        For deadlines recorded in the checkpoint (a job's submit time plus its poll deadline).
        """
        now = self.monotonic()
        if self._anchor is None:
            self._anchor = (now, time.time())
        loop0, wall0 = self._anchor
        return wall0 + (now - loop0)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (at least one pass of the event loop, even for 0)."""
        await asyncio.sleep(max(0.0, seconds))
