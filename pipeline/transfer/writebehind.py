"""Hashing and writing a large download beside its reading: bounded slots, two worker threads.

The event loop only reads the socket and copies each piece it gets into the current slot (one
``memcpy``); a full slot goes to a hashing thread and a writing thread at once, each taking the
slots in order, and comes back free when both are done with it. sha256 (OpenSSL, which drops
the GIL for large buffers) then runs on 4 MiB buffers beside the reading and beside the write,
instead of after it. At most ``SLOTS`` slots exist: when the disk or the hash falls behind,
the reading waits for one (memory stays flat in the size of the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline._util.fsutil import write_all
from pipeline.errors import FetchError

OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


#: A large body is copied into reusable slots of this size, each handed over when full...
SLOT_BYTES = 4 * 1024 * 1024


#: ... and at most this many exist: reading waits for one to be free (memory stays bounded).
SLOTS = 4


#: Bytes written between two hints to the kernel: write this back, evict the range before.
WRITEBACK_BYTES = 8 * 1024 * 1024


#: Write full slots with ``O_DIRECT`` where the file system takes it (see :class:`PartFile`).
DIRECT = hasattr(os, "O_DIRECT")


#: ``O_DIRECT`` wants file offsets and lengths in multiples of the block size (slots: pages).
ALIGN = 4096


Data = bytes | memoryview


class PartFile:
    """The ``.part`` file, created on its first write (in a worker thread), then owned by it.

    With ``direct`` (large bodies) it is opened with ``O_DIRECT`` when the file system allows:
    full slots go from their page-aligned memory to the disk without a copy into the page cache
    or a kernel writeback thread (0.15 s of CPU per GiB on the benchmark VM, against 0.4-4 s
    buffered, and a steadier speed). A write that is not aligned (the last partial slot), or a
    file system that refuses one, turns ``O_DIRECT`` off for the rest of the file. Durability
    still comes from the fsync at the end.
    """

    def __init__(self, final: Path, part: Path, *, direct: bool = False) -> None:
        self.final = final
        self.part = part
        self.direct = direct
        self.fd = -1
        self.created = False
        self._written = 0
        self._synced = 0  # bytes whose writeback was started (buffered writes)
        self._dropped = 0  # bytes evicted from the page cache (if written back)

    def write(self, chunks: Sequence[Data], digest: Any = None) -> None:
        """Create the part if needed (``open_part``), write ``chunks`` (hashed if ``digest``)."""
        if self.fd < 0:
            try:
                self.fd = open_part(self.final, self.part, direct=self.direct)
            except OSError as exc:
                raise FetchError(f"cannot create {self.part}: {exc.strerror}") from exc
            self.created = True
            self.direct = self.direct and _direct(self.fd)
        for chunk in chunks:
            if digest is not None:
                digest.update(chunk)
            self._put(chunk)

    def _put(self, chunk: Data) -> None:
        view = self._put_direct(chunk) if self.direct else memoryview(chunk)
        if not view:
            return
        write_all(self.fd, view)
        self._written += len(view)
        if self._written - self._synced >= WRITEBACK_BYTES:
            # the new range starts going to the disk; the one before, on it by now, is evicted
            write_back(self.fd, self._dropped, self._written - self._dropped)
            self._dropped, self._synced = self._synced, self._written

    def _put_direct(self, chunk: Data) -> memoryview:
        """Write the aligned head of ``chunk`` with ``O_DIRECT``; return the rest.

        A rest (an unaligned tail, or what the file system refused) is for a buffered write:
        ``O_DIRECT`` is then off for the rest of the file.
        """
        view = memoryview(chunk)
        whole = len(view) - len(view) % ALIGN if self._written % ALIGN == 0 else 0
        if whole:
            try:
                write_all(self.fd, view[:whole])
                done = whole
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # refused (this file system wants another alignment): buffered from here
                done = os.lseek(self.fd, 0, os.SEEK_CUR) - self._written
                whole = -1
            self._written += done
            view = view[done:]
        if view or whole < 0:
            _direct(self.fd, off=True)
            self.direct = False
            self._synced = self._dropped = self._written  # writeback hints from here
        return view

    def finish(self, chunks: Sequence[Data], digest: Any = None) -> None:
        """Write the last ``chunks`` (hashed if ``digest``), fsync, and close whatever happens."""
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


def _direct(fd: int, *, off: bool = False) -> bool:
    """Whether ``fd`` writes with ``O_DIRECT`` (with ``off``: after turning it off)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    import fcntl  # POSIX, as O_DIRECT

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if off and flags & direct:
        flags &= ~direct
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return bool(flags & direct)


def write_back(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the part file back to the disk, and evict what already is.

    On Linux ``POSIX_FADV_DONTNEED`` starts the writeback of the dirty pages of the range and
    evicts its clean ones (pages still dirty or under writeback stay). Applied to each new
    range and once more a range later, the final fsync has little left to wait for, and a large
    video streams through a few recycled pages of the page cache instead of filling it with
    fresh ones (on the 2-core benchmark VM, writing 1 GB into fresh pages costs 1-4 s of CPU
    instead of 0.25 s). A hint only: durability still comes from that fsync. Used for buffered
    writes (where ``O_DIRECT`` is refused, or turned off).
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class _Batch:
    """A filled slot (or its filled part) on its way through both threads."""

    __slots__ = ("last", "pending", "slot", "view")

    def __init__(self, slot: mmap.mmap | None, length: int, last: bool) -> None:
        self.slot = slot
        self.view = memoryview(slot if slot is not None else b"")[:length]
        self.last = last
        self.pending = 2  # the hashing and the writing thread


class WriteBehind:
    """Two threads hashing and writing a large body, each in order, while the event loop reads.

    The event loop copies the body into ``SLOTS`` reusable page-aligned slots of ``SLOT_BYTES``
    and drops each piece at once (holding megabytes of piece objects until they are written
    made the allocator return and re-fault memory all the time). Each full slot goes to both
    threads; it is free again when both are done with it. Memory: ``SLOTS`` slots. The writing
    thread owns the part file: it creates it with the first slot, fsyncs and closes it at the
    end (or closes it when stopped early).
    """

    def __init__(self, out: PartFile, digest: Any) -> None:
        self._out = out
        self._digest = digest
        out.direct = DIRECT
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()  # guards the fields below shared with the threads
        self._free: list[mmap.mmap] = []
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._running = 0  # threads started and not ended
        self._stopping = False
        self._slots = 0  # allocated (event loop only)
        self._slot: mmap.mmap | None = None  # being filled
        self._view: memoryview | None = None
        self._filled = 0
        self._queues: list[queue.SimpleQueue[_Batch | None]] = []
        for name, writes in (("pipeline-hash", False), ("pipeline-write", True)):
            q: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
            thread = threading.Thread(target=self._main, args=(q, writes), name=name, daemon=True)
            try:
                thread.start()
            except BaseException:  # no thread to spare: stop the one started, if any
                for started in self._queues:
                    started.put(None)
                raise
            self._queues.append(q)
            self._running += 1

    async def add(self, chunk: Data) -> None:
        """Copy ``chunk`` into the slots, handing each full one over; may wait for a free slot.

        Raises:
            Exception: what hashing or writing an earlier slot raised (``OSError``...).
        """
        size = len(chunk)
        view = self._view
        if view is not None and self._filled + size < SLOT_BYTES:  # the common case
            view[self._filled : self._filled + size] = chunk
            self._filled += size
            return
        done = 0
        while done < size:
            if self._view is None:
                self._slot = await self._take()
                self._view, self._filled = memoryview(self._slot), 0
            n = min(size - done, SLOT_BYTES - self._filled)
            self._view[self._filled : self._filled + n] = memoryview(chunk)[done : done + n]
            self._filled += n
            done += n
            if self._filled == SLOT_BYTES:
                self._hand_over(last=False)

    async def extend(self, chunks: Sequence[Data]) -> None:
        """:meth:`add` each of ``chunks`` in turn."""
        for chunk in chunks:
            await self.add(chunk)

    async def finish(self) -> None:
        """Hash and write the rest, fsync and close the part; wait for all of it.

        Raises:
            Exception: what hashing, writing, syncing or closing raised.
        """
        self._hand_over(last=True)  # the partly filled slot, or none
        await self._until_ended(errors=True)

    async def close(self) -> None:
        """Stop (what is still queued is skipped) and wait for the threads; the part is closed."""
        self._stopping = True
        for q in self._queues:
            q.put(None)
        await self._until_ended(errors=False)

    def _hand_over(self, *, last: bool) -> None:
        batch = _Batch(self._slot, self._filled, last)
        self._slot = self._view = None
        self._filled = 0
        for q in self._queues:
            q.put(batch)

    async def _take(self) -> mmap.mmap:
        """A free slot: a released one, a new one while fewer than ``SLOTS``, else wait."""
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._free:
                    return self._free.pop()
                if self._slots < SLOTS:
                    self._slots += 1
                    return mmap.mmap(-1, SLOT_BYTES)  # page-aligned, as O_DIRECT wants
                if not self._running:
                    raise RuntimeError("the write-behind threads have stopped")
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def _until_ended(self, *, errors: bool) -> None:
        """Wait for both threads to finish (with ``errors``, raise the first error at once)."""
        while True:
            with self._lock:
                if errors and self._error is not None:
                    raise self._error
                if not self._running:
                    return
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _work(self, batch: _Batch, writes: bool) -> None:
        if not writes:
            self._digest.update(batch.view)
        elif batch.last:
            self._out.finish([batch.view])
        else:
            self._out.write([batch.view])

    def _main(self, q: queue.SimpleQueue[_Batch | None], writes: bool) -> None:
        """One thread: hash (or write) each batch in order until the last one, or a stop."""
        try:
            while (batch := q.get()) is not None:
                error = None
                if self._error is None and not self._stopping:
                    try:
                        self._work(batch, writes)
                    except BaseException as exc:  # handed to the event loop
                        error = exc
                self._settle(batch, error)
                if batch.last:
                    return
        finally:
            if writes:
                with contextlib.suppress(OSError):
                    self._out.close()  # still open only when stopped early
            self._settle(None, None, ended=True)

    def _settle(
        self, batch: _Batch | None, error: BaseException | None, ended: bool = False
    ) -> None:
        """Release a slot both threads are done with, note an error or an end, wake the loop."""
        with self._lock:
            if batch is not None:
                batch.pending -= 1
                if not batch.pending and batch.slot is not None:
                    self._free.append(batch.slot)
            self._error = self._error or error
            self._running -= ended
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(wake, waiter)


def wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` unless it is already done (called on the event loop)."""
    if not waiter.done():
        waiter.set_result(None)


def open_part(final: Path, part: Path, *, direct: bool = False) -> int:
    """Refuse a planted final name, drop a stale part, create the part (``O_EXCL|O_NOFOLLOW``).

    The directory is created when missing and refused when it is a symbolic link. With
    ``direct``, ``O_DIRECT`` is asked, and dropped when the file system refuses it (tmpfs...).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.parent.is_symlink():
        raise FetchError(f"{final.parent} is a symbolic link; refusing to write through it")
    refuse_non_regular(final)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # a stale part from an interrupted fetch; never published
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(part, OPEN_FLAGS | os.O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(part, OPEN_FLAGS, 0o644)


def refuse_non_regular(final: Path) -> None:
    """Never write through a symlink or over a directory planted at the output name."""
    if final.is_symlink() or (final.exists() and not final.is_file()):
        raise FetchError(f"refusing to replace {final}: not a regular file")
