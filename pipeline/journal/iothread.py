"""A dedicated worker thread for blocking file work that must happen in order (the checkpoint).

``anyio.to_thread.run_sync`` costs about 125 µs of CPU per call on the 2-core benchmark machine
(a capacity limiter, a thread pool, a ``concurrent.futures`` future chained to an asyncio one);
one long-lived thread fed through a ``queue.SimpleQueue`` and answering with
``loop.call_soon_threadsafe`` costs about 60 µs (README, Performance). The checkpoint has a
single writer by design, so one thread is also the natural shape: batches are written and
fsynced in submission order, and the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

#: Seconds :meth:`IoThread.close` waits for the thread to finish the work already queued.
CLOSE_TIMEOUT_S = 30.0

_Item = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class IoThread:
    """One daemon thread running submitted functions one at a time, in order.

    The thread starts on first use and stops at :meth:`close`. Exceptions raised by a function
    are re-raised in the awaiting task.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the thread and return its result.

        The wait is shielded from cancellation: once queued, the work finishes and its outcome is
        returned (a cancellation is delivered at the caller's next checkpoint), as with
        ``anyio.to_thread.run_sync``. Bounded by the work itself (file writes and fsyncs).

        Raises:
            Exception: whatever ``fn`` raised.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop))
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def _main(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, future, loop = item
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task
                _answer(loop, future, None, exc)
            else:
                _answer(loop, future, result, None)

    def close(self) -> None:
        """Let the queued work finish, then stop the thread (waits up to CLOSE_TIMEOUT_S)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(CLOSE_TIMEOUT_S)


def _answer(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: object,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is waiting
        loop.call_soon_threadsafe(settle)
