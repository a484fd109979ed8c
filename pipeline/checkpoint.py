"""The checkpoint: an append-only JSONL event log, the run's only source of truth.

``RUN_DIR/checkpoint.jsonl`` (mode 0600), one compact JSON object per line::

    {"att":1,"ev":"submit_intent","key":"…","seq":42,"shot":"harbor-s01-t1","ts":"2026-…Z","v":1,
     "crc":"1f2e3d4c"}

- keys sorted, ``crc`` last: CRC32 (hex) of the line's canonical JSON *without* ``crc``, so a
  reader checks a line with one CRC over its bytes;
- ``seq`` strictly increases; ``v`` is the format version (a higher one is refused);
- one ``os.write`` per line on an ``O_APPEND`` descriptor; a short write is a torn record.

Durability (design.md §6): events in :data:`DURABLE` are fsynced before :meth:`Checkpoint.append`
returns (concurrent callers share one write+fsync in a worker thread: group commit); the others
wait in memory and are written with the next durable event, or within a second: a crash may lose
only those (a status, a plan line), which the next run redoes for free. Any write or fsync error
is fail-stop: every later append raises :class:`~pipeline.errors.CheckpointError`.

Loading (:func:`load`): a bad *last* line or bytes after the last newline (a torn tail) is moved to
``checkpoint.jsonl.corrupt-<time>`` and cut off; a bad line followed by good ones cannot come from
a crash of an append-only writer, so loading refuses with the line number.

A lock (``fcntl.flock`` on ``checkpoint.lock``) keeps a second runner out of the run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson

from pipeline.errors import CheckpointError, LockedError
from pipeline.fsutil import fsync_dir, write_all
from pipeline.gcutil import gc_paused
from pipeline.iothread import IoThread
from pipeline.models import Event

VERSION = 1
FILE = "checkpoint.jsonl"
LOCK = "checkpoint.lock"

#: Events fsynced before ``append`` returns (design.md §6, reliability.md §3.4).
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

_EVENTS = {e.value: e for e in Event}
_Action = tuple[int, Callable[[], None]]
_CRC_TAIL = len(b',"crc":"00000000"}\n')
_RESERVED = frozenset({"v", "seq", "ts", "ev", "shot", "crc"})


@dataclass(frozen=True, slots=True)
class Record:
    """One checkpoint line.

    Attributes:
        seq: position in the log, strictly increasing from 1.
        ts: UTC time of the append, ISO 8601 with milliseconds and ``Z``.
        ev: the event.
        shot: the shot id, or None for run-level events.
        data: every other field (e.g. ``att``, ``key``, ``job``), JSON values.
    """

    seq: int
    ts: str
    ev: Event
    shot: str | None
    data: Mapping[str, Any] = field(default_factory=dict)


_SECOND: list[Any] = [None, ""]  # the last whole second seen by now_ts, and its text


def now_ts() -> str:
    """The current UTC time as ``2026-11-20T10:00:00.123Z`` (milliseconds truncated)."""
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:  # formatting the date part once per second (~1.5 µs saved)
        _SECOND[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_SECOND[1]}.{int((now - second) * 1000):03d}Z"


def ts_epoch(ts: str) -> float:
    """A record's ``ts`` (as written by :func:`now_ts`) as Unix seconds."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def encode(record: Record) -> bytes:
    """The line for ``record``: canonical JSON (sorted keys, compact) with ``crc`` appended.

    Raises:
        ValueError: a field uses a reserved name or is not JSON-serialisable.
    """
    clash = _RESERVED & record.data.keys()
    if clash:
        raise ValueError(f"reserved checkpoint field(s): {sorted(clash)}")
    obj: dict[str, Any] = {"v": VERSION, "seq": record.seq, "ts": record.ts, "ev": record.ev.value}
    if record.shot is not None:
        obj["shot"] = record.shot
    obj.update(record.data)
    try:
        body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None
    crc = zlib.crc32(body)
    return body[:-1] + b',"crc":"%08x"}\n' % crc


class _BadLine(ValueError):
    """A line that fails its checks (the reason is the message)."""


def decode(line: bytes, prev_seq: int) -> Record:
    """Parse and verify one line (with its newline).

    Raises:
        _BadLine: wrong CRC, not JSON, sequence not increasing, unknown event.
        CheckpointError: written by a newer format version.
    """
    if len(line) <= _CRC_TAIL or not line.endswith(b'"}\n') or line[-_CRC_TAIL:-11] != b',"crc":"':
        raise _BadLine("no checksum")
    body = line[:-_CRC_TAIL] + b"}"
    try:
        expected = int(line[-11:-3], 16)
    except ValueError:
        raise _BadLine("bad checksum field") from None
    if zlib.crc32(body) != expected:
        raise _BadLine("checksum mismatch")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadLine("not JSON") from None
    if not isinstance(obj, dict):
        raise _BadLine("not an object")
    v = obj.pop("v", None)
    if v != VERSION:
        if isinstance(v, int) and v > VERSION:
            raise CheckpointError(f"written by a newer pipeline (format v{v}; this one reads v1)")
        raise _BadLine(f"unknown format version {v!r}")
    seq, ts, ev = obj.pop("seq", None), obj.pop("ts", None), obj.pop("ev", None)
    if not isinstance(seq, int) or seq <= prev_seq:
        raise _BadLine(f"sequence {seq!r} does not follow {prev_seq}")
    if ev not in _EVENTS:
        raise _BadLine(f"unknown event {ev!r}")
    if not isinstance(ts, str):
        raise _BadLine("no timestamp")
    shot = obj.pop("shot", None)
    return Record(seq=seq, ts=ts, ev=_EVENTS[ev], shot=shot, data=obj)


#: Receives every good record of a log, in order, as its parts ``(seq, ts, ev, shot, data)``
#: (the fields of :class:`Record`; ``data`` is a new dict the fold may keep). See :func:`parse`.
Fold = Callable[[int, str, Event, str | None, Mapping[str, Any]], None]


_TAIL = _CRC_TAIL - 1  # the crc field of a line without its newline: ,"crc":"xxxxxxxx"}
_BLOCK = 1 << 20  # bytes read and split at a time


def _fold_lines(lines: Iterator[bytes], prev: int, fold: Fold) -> tuple[bytes | None, int, int]:
    """Fold the lines (without newline) that pass every check of :func:`decode`, as it would.

    This is decode for the spelling :func:`encode` writes, without its error messages: any line
    it does not accept (a bad one, or a good one in another spelling such as an upper-case crc)
    stops the loop and is returned for decode to judge. Returns ``(that line or None at the
    end, lines folded, seq of the last one folded)``.
    """
    crc32 = zlib.crc32
    loads = orjson.loads
    events = _EVENTS
    crc_field = b',"crc":"%08x"}'
    n = -1
    for n, line in enumerate(lines):
        body = line[:-_TAIL] + b"}"
        # One match of the whole field checks its place and spelling, the CRC and the line end.
        if line.endswith(crc_field % crc32(body)):
            try:
                obj = loads(body)  # then not a dict, a missing key or an unknown ev all raise
                seq = obj.pop("seq")
                ev = events[obj.pop("ev")]
                ts = obj.pop("ts")
                v = obj.pop("v")
            except (ValueError, LookupError, TypeError, AttributeError):
                return line, n, prev
            if v == VERSION and seq.__class__ is int and seq > prev and ts.__class__ is str:
                fold(seq, ts, ev, obj.pop("shot", None), obj)
                prev = seq
                continue
        return line, n, prev
    return None, n + 1, prev


class _Scan:
    """One pass over a log, fed its complete lines in order: what :func:`parse` does."""

    __slots__ = ("bad", "fold", "lines", "name", "offset", "prev")

    def __init__(self, fold: Fold, name: str) -> None:
        self.fold = fold
        self.name = name
        self.prev = 0  # seq of the last good record
        self.lines = 0  # complete lines fed so far
        self.offset = 0  # and their bytes
        self.bad: tuple[int, int, str] | None = None  # (offset, line number, reason) of the first

    def feed(self, lines: list[bytes], size: int) -> None:
        """Check and fold ``lines`` (``size`` bytes with their newlines, each line without)."""
        it = iter(lines)
        done = 0
        while self.bad is None:
            line, n, self.prev = _fold_lines(it, self.prev, self.fold)
            done += n
            if line is None:
                break
            try:
                rec = decode(line + b"\n", self.prev)
            except _BadLine as exc:
                offset = self.offset + sum(len(x) + 1 for x in lines[:done])
                self.bad = (offset, self.lines + done + 1, str(exc))
            else:
                self.fold(rec.seq, rec.ts, rec.ev, rec.shot, rec.data)
                self.prev = rec.seq
            done += 1
        for line in it:  # after a bad line: a crash leaves nothing good behind it
            try:
                decode(line + b"\n", self.prev)
            except _BadLine:
                continue
            assert self.bad is not None
            raise CheckpointError(
                f"{self.name}:{self.bad[1]}: corrupt record ({self.bad[2]}) followed by valid "
                "records; this is not a torn tail from a crash, so nothing was changed. Restore "
                "the file from a backup or remove the bad line by hand after checking it."
            )
        self.lines += len(lines)
        self.offset += size

    def run(self, blocks: Iterable[bytes]) -> int:
        """Feed the lines of ``blocks`` (a log's bytes, in order); returns the good size."""
        with gc_paused():
            self._run(blocks)
        return self.bad[0] if self.bad is not None else self.offset

    def _run(self, blocks: Iterable[bytes]) -> None:
        carry: list[bytes] = []  # the start of a line that goes on in the next block
        for block in blocks:
            lines = block.split(b"\n")
            if len(lines) == 1:
                carry.append(block)
                continue
            if carry:
                lines[0] = b"".join((*carry, lines[0]))
            size = sum(map(len, carry)) + len(block) - len(lines[-1])
            last = lines.pop()
            carry = [last] if last else []
            self.feed(lines, size)
        if self.bad is None and carry:
            self.bad = (self.offset, self.lines + 1, "incomplete last line")


@dataclass(frozen=True, slots=True)
class Loaded:
    """The result of :func:`load`.

    Attributes:
        records: every good record, in order (empty when they went to a ``fold`` instead).
        good_bytes: length of the good prefix of the file.
        tail: bytes after the good prefix (a torn or corrupt tail; empty when clean).
        moved_to: where the tail was saved when it was repaired, else None.
        last_seq: ``seq`` of the last good record (0: none); the next append is ``last_seq + 1``.
    """

    records: list[Record]
    good_bytes: int
    tail: bytes = b""
    moved_to: Path | None = None
    last_seq: int = 0


def _keep(records: list[Record]) -> Fold:
    """A fold that appends every record to ``records``."""
    append = records.append

    def keep(seq: int, ts: str, ev: Event, shot: str | None, data: Mapping[str, Any]) -> None:
        append(Record(seq=seq, ts=ts, ev=ev, shot=shot, data=data))

    return keep


def parse(data: bytes, *, name: str = FILE, fold: Fold | None = None) -> Loaded:
    """Split ``data`` into good records and a torn tail (a pure function, but for ``fold``).

    Every line is checked as :func:`decode` does (CRC, JSON object, version, increasing seq,
    known event, timestamp). With ``fold``, each good record is passed to it, in order, as it is
    read (``fold(seq, ts, ev, shot, data)``, see :data:`Fold`) instead of being kept: the result's
    ``records`` is empty and memory stays flat, e.g. ``parse(data, fold=folder(state))``
    (:func:`pipeline.state.folder`). On an error the fold has seen a prefix of the records.

    Raises:
        CheckpointError: a bad line is followed by good lines (mid-file corruption), or a newer
            format version.
        Exception: whatever ``fold`` raises.
    """
    records: list[Record] = []
    scan = _Scan(_keep(records) if fold is None else fold, name)
    good = scan.run(data[i : i + _BLOCK] for i in range(0, len(data), _BLOCK))
    return Loaded(records=records, good_bytes=good, tail=data[good:], last_seq=scan.prev)


def _blocks(fh: BinaryIO, path: Path, start: int = 0) -> Iterator[bytes]:
    """The bytes of ``fh`` from offset ``start`` to its end, a block at a time.

    Raises:
        CheckpointError: a read failed.
    """
    try:
        fh.seek(start)
        while block := fh.read(_BLOCK):
            yield block
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class Prefix:
    """A prefix of a log whose records a caller has already folded by other means (a snapshot).

    Attributes:
        offset: its length in bytes (it ends with a newline); reading resumes there.
        seq: ``seq`` of its last record (0: none); the next record must be greater.
        lines: its number of lines (for the line numbers of error messages).
    """

    offset: int = 0
    seq: int = 0
    lines: int = 0


#: Called by :func:`load` with the open log before it reads it: returns the prefix the fold's
#: state already reflects (``Prefix()``: none, replay everything). See :mod:`pipeline.snapshot`.
PrefixHook = Callable[[BinaryIO], Prefix]


def load(
    path: Path, *, repair: bool, fold: Fold | None = None, prefix: PrefixHook | None = None
) -> Loaded:
    """Read the log at ``path``; with ``repair`` move a torn tail aside and truncate the file.

    Without ``repair`` (``pipeline status``) the file is not modified and the tail is ignored.
    The file is read a block at a time. ``fold`` is as for :func:`parse`: with it, the records
    are passed to it instead of being kept (``load(path, repair=False, fold=folder(state))``
    replays the log into ``state``; see :func:`pipeline.state.folder`).

    With ``prefix`` (and a ``fold``), it is called with the open file first and only the bytes
    after the :class:`Prefix` it returns are read, checked and folded, exactly as they would be
    after that prefix (the torn-tail repair included): the hook has put the state of the
    prefix into the fold's state itself (:func:`pipeline.snapshot.prefix_into`). The result's
    ``good_bytes`` and ``last_seq`` count the whole file.

    Raises:
        CheckpointError: unreadable file, mid-file corruption, or a newer format version.
        ValueError: ``prefix`` without ``fold``.
        Exception: whatever ``fold`` or ``prefix`` raises.
    """
    if prefix is not None and fold is None:
        raise ValueError("a prefix hook needs a fold")
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return Loaded(records=[], good_bytes=0)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc
    records: list[Record] = []
    scan = _Scan(_keep(records) if fold is None else fold, path.name)
    with fh:
        if prefix is not None:
            start = prefix(fh)
            scan.offset, scan.prev, scan.lines = start.offset, start.seq, start.lines
        good = scan.run(_blocks(fh, path, scan.offset))
        tail = b"".join(_blocks(fh, path, good)) if scan.bad is not None else b""
    loaded = Loaded(records=records, good_bytes=good, tail=tail, last_seq=scan.prev)
    if not loaded.tail or not repair:
        return loaded
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, loaded.tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        with path.open("r+b") as out:
            out.truncate(loaded.good_bytes)
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot repair the torn tail of {path}: {exc.strerror}") from exc
    return Loaded(loaded.records, loaded.good_bytes, loaded.tail, aside, loaded.last_seq)


def _lock(run_dir: Path) -> int:
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockedError(
            f"another runner (pid {holder}) is working in {run_dir}; wait for it to finish, "
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
        into ``state`` without holding a million records (:func:`pipeline.state.folder`).
        ``prefix`` is passed to :func:`load` (called once the lock is held): e.g.
        :func:`pipeline.snapshot.prefix_into` starts ``state`` from a snapshot.

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

        For a snapshot of the state (:func:`pipeline.snapshot.write_snapshot`): call it when
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
