"""The checkpoint: an append-only JSONL event log, the run's only source of truth (the writer).

The line format and reading a log back (:func:`load`, torn-tail repair, folding into a state)
are in :mod:`pipeline.journal.lines`; their names are re-exported here. One ``os.write`` of whole
lines per batch on an ``O_APPEND`` descriptor; a short write is a torn record.

Durability (README, resume semantics): events in :data:`DURABLE` are fsynced before
:meth:`Checkpoint.append` returns (concurrent callers share one write+fsync in a worker thread:
group commit); the others wait in memory and are written with the next durable event, or within
a second: a crash may lose only those (a status, a plan line), which the next run redoes for free.
Any write or fsync error is fail-stop: every later append raises
:class:`~pipeline.errors.CheckpointError`.

A lock (``fcntl.flock`` on ``checkpoint.lock``) keeps a second runner out of the run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from pipeline._util.fsutil import fsync_dir
from pipeline.errors import CheckpointError, LockedError
from pipeline.journal.iothread import IoThread
from pipeline.journal.lines import FILE as FILE
from pipeline.journal.lines import VERSION as VERSION
from pipeline.journal.lines import Fold as Fold
from pipeline.journal.lines import Loaded as Loaded
from pipeline.journal.lines import Prefix as Prefix
from pipeline.journal.lines import PrefixHook as PrefixHook
from pipeline.journal.lines import Record as Record
from pipeline.journal.lines import decode as decode
from pipeline.journal.lines import encode as encode
from pipeline.journal.lines import load as load
from pipeline.journal.lines import now_ts as now_ts
from pipeline.journal.lines import parse as parse
from pipeline.journal.lines import ts_epoch as ts_epoch
from pipeline.models import Event

LOCK = "checkpoint.lock"

#: Events fsynced before ``append`` returns (README, resume semantics).
DURABLE = frozenset(
    {
        Event.SUBMIT_INTENT,
        Event.SUBMITTED,
        Event.SUBMIT_AMBIGUOUS,
        Event.SUBMIT_REJECTED,
        Event.SUBMIT_NOT_SENT,
        Event.COMPLETED,
        Event.FETCHED,
        Event.FAILED,
        Event.CANCELLED,
        Event.RUN_FINISHED,
    }
)

_Action = tuple[int, Callable[[], None]]


def _lock(run_dir: Path) -> int:
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockedError(
            f"another runner holds {run_dir} (pid {holder}); wait for it to finish, "
            "or stop it first"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        os.close(fd)  # releases the lock: a failed start must not lock the next run out
        raise
    return fd


class Checkpoint:
    """The open, locked log of one run directory. Build with :meth:`open`; one writer per run.

    Attributes:
        run_dir: the run directory.
        path: ``run_dir/checkpoint.jsonl``.
        records: the records loaded at open (appends are returned, not added here).
        repaired: where a torn tail was moved at open, or None.
    """

    def __init__(self, run_dir: Path, fd: int, lock_fd: int, loaded: Loaded) -> None:
        self.run_dir = run_dir
        self.path = run_dir / FILE
        self.records = loaded.records
        self.repaired = loaded.moved_to
        self._fd = fd
        self._lock_fd = lock_fd
        self._seq = loaded.last_seq
        self._synced = self._seq
        self._buffer: list[bytes] = []
        self._sync_lock = asyncio.Lock()  # no forced yield when free (anyio's Lock yields)
        self._failed: str | None = None
        self._last_sync = time.monotonic()
        self._io = IoThread("pipeline-checkpoint")
        self._actions: list[_Action] = []  # (seq, then) waiting for their record's fsync
        self._outcomes: dict[int, OSError] = {}  # seq -> what its ``then`` raised

    @classmethod
    async def open(
        cls, run_dir: Path, *, fold: Fold | None = None, prefix: PrefixHook | None = None
    ) -> Checkpoint:
        """Create or open ``run_dir``'s log: lock, load, repair a torn tail.

        With ``fold`` the loaded records are passed to it as they are read (see :func:`load`)
        and ``records`` stays empty: ``Checkpoint.open(d, fold=folder(state))`` replays the log
        into ``state`` without holding a million records (:func:`pipeline.journal.state.folder`).
        ``prefix`` is passed to :func:`load` (called once the lock is held): e.g.
        :func:`pipeline.journal.snapshot.prefix_into` starts ``state`` from a snapshot.

        Raises:
            LockedError: another runner holds the lock.
            CheckpointError: mid-file corruption, newer format, or an I/O error.
            Exception: whatever ``fold`` raises (the lock is released).
        """
        return await anyio.to_thread.run_sync(cls._open_sync, run_dir, fold, prefix)

    @classmethod
    def _open_sync(
        cls, run_dir: Path, fold: Fold | None = None, prefix: PrefixHook | None = None
    ) -> Checkpoint:
        try:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            if created:
                fsync_dir(run_dir.parent)
            lock_fd = _lock(run_dir)
        except OSError as exc:
            raise CheckpointError(f"cannot use run directory {run_dir}: {exc.strerror}") from exc
        try:
            path = run_dir / FILE
            loaded = load(path, repair=True, fold=fold, prefix=prefix)
            existed = path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            if not existed:
                os.fsync(fd)
                fsync_dir(run_dir)
        except BaseException as exc:
            os.close(lock_fd)
            if isinstance(exc, OSError):
                raise CheckpointError(f"cannot open {run_dir / FILE}: {exc.strerror}") from exc
            raise
        return cls(run_dir, fd, lock_fd, loaded)

    @property
    def position(self) -> tuple[int, int]:
        """``(bytes, seq)``: the log's size and the seq of its last record, all of it durable.

        For a snapshot of the state (:func:`pipeline.journal.snapshot.write_snapshot`): call it when
        nothing is being appended, after :meth:`sync` or a durable append.

        Raises:
            CheckpointError: appended records are not yet written and fsynced, a write failed,
                or the log is closed.
        """
        self._check()
        if self._buffer or self._synced != self._seq or self._fd < 0:
            raise CheckpointError(f"{self.path}: records are still being written")
        return os.fstat(self._fd).st_size, self._seq

    def _check(self) -> None:
        if self._failed is not None:
            raise CheckpointError(f"the checkpoint is not writable ({self._failed}); stopped")

    def _write(self, ev: Event, shot: str | None, fields: Mapping[str, Any]) -> Record:
        """Encode a record into the write buffer (written and fsynced by :meth:`_flush`)."""
        self._check()
        record = Record(seq=self._seq + 1, ts=now_ts(), ev=ev, shot=shot, data=dict(fields))
        self._buffer.append(encode(record))
        self._seq = record.seq
        return record

    async def append(
        self,
        ev: Event,
        shot: str | None,
        /,
        *,
        then: Callable[[], None] | None = None,
        **fields: Any,
    ) -> Record:
        """Append one event; durable events are fsynced before this returns.

        Args:
            ev: the event.
            shot: shot id, or None for run-level events.
            then: blocking file work that may only happen once this record is durable (e.g.
                renaming a fetched video to its final name). It runs in the writer thread right
                after the fsync that made the record durable, sharing that thread hop; the
                record is then fsynced even if ``ev`` is not a durable event.
            **fields: JSON-serialisable extra fields (never secrets or request bodies).

        Returns:
            The record as written.

        Raises:
            CheckpointError: the write or fsync failed now or earlier (fail-stop).
            OSError: ``then`` failed (the record is written and durable; nothing else failed).
        """
        record = self._write(ev, shot, {k: v for k, v in fields.items() if v is not None})
        # ``completed`` must be durable only when it carries a (maybe one-time) result URL.
        durable = ev in DURABLE and not (ev == Event.COMPLETED and not record.data.get("url"))
        if then is not None:
            self._actions.append((record.seq, then))
        if durable or then is not None or time.monotonic() - self._last_sync > 1.0:
            await self._sync_through(record.seq)
        if then is not None:
            failure = self._outcomes.pop(record.seq, None)
            if failure is not None:
                raise failure
        return record

    def append_many(
        self, items: Iterable[tuple[Event, str | None, Mapping[str, Any]]]
    ) -> list[Record]:
        """Append non-durable events at once (e.g. ``shot_planned`` for a whole plan), no fsync.

        Raises:
            CheckpointError: an earlier write failed (fail-stop).
        """
        return [self._write(ev, shot, fields) for ev, shot, fields in items]

    async def sync(self) -> None:
        """Fsync everything appended so far.

        Raises:
            CheckpointError: the fsync failed (fail-stop).
        """
        await self._sync_through(self._seq)

    async def _sync_through(self, seq: int) -> None:
        """Write the buffer and fsync, in one worker-thread call, through record ``seq``.

        Concurrent callers share one write+fsync (group commit). The event loop never writes to
        the log itself, so it never waits on the file's lock behind a running fsync.
        """
        async with self._sync_lock:
            self._check()
            if self._synced >= seq:
                return
            data, self._buffer = b"".join(self._buffer), []
            actions, self._actions = self._actions, []
            target = self._seq
            failure = await self._io.run(partial(self._write_and_sync, data, actions))
            if failure is not None:
                self._failed = failure
                raise CheckpointError(f"{self.path}: {failure}")
            self._synced = target
            self._last_sync = time.monotonic()

    def _write_and_sync(self, data: bytes, actions: list[_Action]) -> str | None:
        """One ``os.write`` of whole lines, ``fsync``, then the ``then`` actions of those lines.

        Returns what failed, or None. A short write is a torn record: it is never retried (the
        next run repairs the tail). Actions run only once their records are durable; an
        action's OSError is kept for its appender in ``_outcomes`` (not a checkpoint failure).
        """
        try:
            written = os.write(self._fd, data) if data else 0
        except OSError as exc:
            return f"write failed: {exc.strerror or exc}"
        if written != len(data):
            return f"short write ({written} of {len(data)} bytes; disk full?)"
        try:
            os.fsync(self._fd)
        except OSError as exc:
            return f"fsync failed: {exc.strerror or exc}"
        for seq, action in actions:
            try:
                action()
            except OSError as exc:
                self._outcomes[seq] = exc
        return None

    async def close(self) -> None:
        """Fsync what is pending, close the log and release the lock. Idempotent.

        Raises:
            CheckpointError: the final fsync failed.
        """
        if self._fd < 0:
            return
        try:
            if self._failed is None:
                await self.sync()
        finally:
            self._io.close()
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
