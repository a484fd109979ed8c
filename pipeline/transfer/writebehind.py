"""Writing a large download behind its reading: a bounded pool of slots, one writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline._util.fsutil import write_all
from pipeline.errors import FetchError

OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


#: The rest of a large body is copied into reusable slots of this size, handed over when full...
SLOT_BYTES = 1024 * 1024


#: ... and at most this many exist: reading waits for one to be written (memory stays bounded).
SLOTS = 4


#: Bytes written between two hints to the kernel: write this back, evict the range before.
WRITEBACK_BYTES = 8 * 1024 * 1024


Data = bytes | memoryview


#: One unit of work: buffers to hash and write, the slot to release after, last (fsync, close).
_Item = tuple[Sequence[Data], bytearray | None, bool]


class PartFile:
    """The ``.part`` file, created on its first write (in a worker thread), then owned by it."""

    def __init__(self, final: Path, part: Path) -> None:
        self.final = final
        self.part = part
        self.fd = -1
        self.created = False
        self._written = 0
        self._synced = 0  # bytes whose writeback was started
        self._dropped = 0  # bytes evicted from the page cache (if written back)

    def write(self, chunks: Sequence[Data], digest: Any) -> None:
        """Create the part if needed (``open_part``), then hash and write ``chunks``."""
        if self.fd < 0:
            try:
                self.fd = open_part(self.final, self.part)
            except OSError as exc:
                raise FetchError(f"cannot create {self.part}: {exc.strerror}") from exc
            self.created = True
        for chunk in chunks:
            digest.update(chunk)
            write_all(self.fd, chunk)
            self._written += len(chunk)
        if self._written - self._synced >= WRITEBACK_BYTES:
            # the new range starts going to the disk; the one before, on it by now, is evicted
            write_back(self.fd, self._dropped, self._written - self._dropped)
            self._dropped, self._synced = self._synced, self._written

    def finish(self, chunks: Sequence[Data], digest: Any) -> None:
        """Hash and write the last ``chunks``, fsync, and close whatever happens."""
        try:
            self.write(chunks, digest)
            os.fsync(self.fd)
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor if open."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def write_back(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the part file back to the disk, and evict what already is.

    On Linux ``POSIX_FADV_DONTNEED`` starts the writeback of the dirty pages of the range and
    evicts its clean ones (pages still dirty or under writeback stay). Applied to each new
    range and once more a range later, the final fsync has little left to wait for, and a large
    video streams through a few recycled pages of the page cache instead of filling it with
    fresh ones (on the 2-core benchmark VM, writing 1 GB into fresh pages costs 1-3 s of CPU
    instead of 0.25 s). A hint only: durability still comes from that fsync.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class WriteBehind:
    """One thread hashing and writing a large body, in order, while the event loop reads on.

    sha256 and the page-cache copy cost about as much CPU as the reading: done here, on the
    other core, a large download stays near the speed of a plain read loop. A first batch read
    before the body was known to be large is handed over as read; after it the event loop
    copies the body into ``SLOTS`` reusable slots and drops each chunk at once. Holding
    megabytes of chunk objects until they are written made the allocator return and re-fault
    memory all the time (25,000 page faults per 256 MB against 3,000: more CPU than the copy).
    Memory: that first batch plus ``SLOTS`` slots. The thread owns the part file: it creates
    it with the first item and closes it when done.
    """

    def __init__(self, out: PartFile, digest: Any, first: list[bytes]) -> None:
        self._out = out
        self._digest = digest
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below shared with the thread
        self._free: list[bytearray] = []
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._stopping = False
        self._slots = 0  # allocated (event loop only)
        self._slot: bytearray | None = None  # being filled
        self._filled = 0
        threading.Thread(target=self._main, name="pipeline-write", daemon=True).start()
        self._queue.put((first, None, False))

    async def add(self, chunk: bytes) -> None:
        """Copy ``chunk`` into the slots, handing each full one over; may wait for a free slot.

        Raises:
            Exception: what hashing or writing an earlier batch raised (``OSError``...).
        """
        done = 0
        while done < len(chunk):
            slot = self._slot
            if slot is None:
                slot = self._slot = await self._take()
                self._filled = 0
            n = min(len(chunk) - done, SLOT_BYTES - self._filled)
            if done == 0 and n == len(chunk):
                slot[self._filled : self._filled + n] = chunk
            else:
                slot[self._filled : self._filled + n] = memoryview(chunk)[done : done + n]
            self._filled += n
            done += n
            if self._filled == SLOT_BYTES:
                self._queue.put(([memoryview(slot)], slot, False))
                self._slot = None

    async def finish(self) -> None:
        """Hash and write the rest, fsync and close the part; wait for all of it.

        Raises:
            Exception: what hashing, writing, syncing or closing raised.
        """
        slot, self._slot = self._slot, None
        rest: list[Data] = [memoryview(slot)[: self._filled]] if slot is not None else []
        self._queue.put((rest, slot, True))
        await self._until_ended(errors=True)

    async def close(self) -> None:
        """Stop (what is still queued is skipped) and wait for the thread; the part is closed."""
        self._stopping = True
        self._queue.put(None)
        await self._until_ended(errors=False)

    async def _take(self) -> bytearray:
        """A free slot: a released one, a new one while fewer than ``SLOTS``, else wait."""
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._free:
                    return self._free.pop()
                if self._slots < SLOTS:
                    self._slots += 1
                    return bytearray(SLOT_BYTES)
                if self._ended:
                    raise RuntimeError("the write-behind thread has stopped")
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def _until_ended(self, *, errors: bool) -> None:
        """Wait for the thread to finish (with ``errors``, raise its first error at once)."""
        while True:
            with self._lock:
                if errors and self._error is not None:
                    raise self._error
                if self._ended:
                    return
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _main(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                chunks, slot, last = item
                error = None
                if self._error is None and not self._stopping:
                    try:
                        if last:
                            self._out.finish(chunks, self._digest)
                        else:
                            self._out.write(chunks, self._digest)
                    except BaseException as exc:  # handed to the event loop
                        error = exc
                del chunks, item  # the slot's views: released before it is reused
                self._settle(slot, error, ended=last)
                if last:
                    return
        finally:
            with contextlib.suppress(OSError):
                self._out.close()  # still open only when stopped early
            self._settle(None, None, ended=True)

    def _settle(self, slot: bytearray | None, error: BaseException | None, *, ended: bool) -> None:
        """Release ``slot``, note an error or the end, and wake the event loop if it waits."""
        with self._lock:
            if slot is not None:
                self._free.append(slot)
            self._error = self._error or error
            self._ended = self._ended or ended
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(wake, waiter)


def wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` unless it is already done (called on the event loop)."""
    if not waiter.done():
        waiter.set_result(None)


def open_part(final: Path, part: Path) -> int:
    """Refuse a planted final name, drop a stale part, create the part (``O_EXCL|O_NOFOLLOW``).

    The directory is created when missing and refused when it is a symbolic link.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.parent.is_symlink():
        raise FetchError(f"{final.parent} is a symbolic link; refusing to write through it")
    refuse_non_regular(final)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # a stale part from an interrupted fetch; never published
    return os.open(part, OPEN_FLAGS, 0o644)


def refuse_non_regular(final: Path) -> None:
    """Never write through a symlink or over a directory planted at the output name."""
    if final.is_symlink() or (final.exists() and not final.is_file()):
        raise FetchError(f"refusing to replace {final}: not a regular file")
