"""The checkpoint's line format and how a log is read back (the writer: ``journal.checkpoint``).

``RUN_DIR/checkpoint.jsonl`` (mode 0600), one compact JSON object per line::

    {"att":1,"ev":"submit_intent","key":"…","seq":42,"shot":"harbor-s01-t1","ts":"2026-…Z","v":1,
     "crc":"1f2e3d4c"}

- keys sorted, ``crc`` last: CRC32 (hex) of the line's canonical JSON *without* ``crc``, so a
  reader checks a line with one CRC over its bytes;
- ``seq`` strictly increases; ``v`` is the format version (a higher one is refused).

Loading (:func:`load`): a bad *last* line or bytes after the last newline (a torn tail) is moved to
``checkpoint.jsonl.corrupt-<time>`` and cut off; a bad line followed by good ones cannot come from
a crash of an append-only writer, so loading refuses with the line number. Lines are checked and
folded into the caller's state as they are read (:data:`Fold`), or kept as records.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline._util.fsutil import fsync_dir, write_all
from pipeline._util.gcutil import gc_paused
from pipeline.errors import CheckpointError
from pipeline.models import Event

VERSION = 1
FILE = "checkpoint.jsonl"

_EVENTS = {e.value: e for e in Event}
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
    (:func:`pipeline.journal.state.folder`). On an error the fold has seen a prefix of the records.

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
#: state already reflects (``Prefix()``: none, replay everything). See
#: :mod:`pipeline.journal.snapshot`.
PrefixHook = Callable[[BinaryIO], Prefix]


def load(
    path: Path, *, repair: bool, fold: Fold | None = None, prefix: PrefixHook | None = None
) -> Loaded:
    """Read the log at ``path``; with ``repair`` move a torn tail aside and truncate the file.

    Without ``repair`` (``pipeline status``) the file is not modified and the tail is ignored.
    The file is read a block at a time. ``fold`` is as for :func:`parse`: with it, the records
    are passed to it instead of being kept (``load(path, repair=False, fold=folder(state))``
    replays the log into ``state``; see :func:`pipeline.journal.state.folder`).

    With ``prefix`` (and a ``fold``), it is called with the open file first and only the bytes
    after the :class:`Prefix` it returns are read, checked and folded, exactly as they would be
    after that prefix (the torn-tail repair included): the hook has put the state of the
    prefix into the fold's state itself (:func:`pipeline.journal.snapshot.prefix_into`). The
    result's
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
