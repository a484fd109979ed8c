"""State snapshots taken while a run goes on, so that a resume after a crash folds only a tail.

:mod:`pipeline.journal.snapshot` describes the file; :func:`~pipeline.journal.snapshot.after_run`
writes one when a run ends. A run that is killed (or stopped by Ctrl-C) never gets there, so
:func:`periodic` also writes them during the run, from a thread of its own (:class:`Snapshotter`):

- **When:** the thread looks at the log's size every :attr:`Policy.check_s` and writes a snapshot
  once the log has grown by at least ``max(min_growth, growth x covered)`` records since the
  last one (10,000 records or 5 %, counted in bytes at the covered prefix's mean line length),
  and at most every :attr:`Policy.min_interval_s` (30 s). A resume then folds at most about a
  twentieth of the log, plus what was appended while the last snapshot was being taken: at
  1,000,000 records about 50,000, 0.4 s of folding beside the snapshot's 1 s. Writing costs
  a snapshot's size every 5 % of growth (about 20 times the final size over a run, in a thread
  of its own and off the appends' path).
- **What, and why it is consistent:** the thread does not look at the runner's live state. That
  state is not the state of any log prefix at most moments: a record is folded into it only
  once its append returns, so with many shots appending at once a later record is often folded
  before an earlier one, and after a cancellation a buffered record may never be folded at all.
  The thread reads the log itself instead, the bytes already written, and folds its complete
  lines with the reader's own code (:func:`~pipeline.journal.checkpoint.parse`, the fold of
  :func:`~pipeline.journal.state.folder`): a snapshot is by construction the state of exactly
  the prefix it names (offset, seq, lines, CRC32 computed on the bytes as they are folded), the
  state a reader would get, and the appends never wait for it. Bytes written but not yet
  fsynced may be covered: if a power loss takes them, the log no longer starts with the bytes
  the snapshot covers and readers ignore it, as they do any stale snapshot.
- **Memory:** between snapshots the thread keeps the state as it will be written, one encoded
  JSON row per shot (:class:`~pipeline.journal.snapshot.Encoded`): about a third of the memory
  of the state itself (90 MB against 263 MB for 200,000 finished shots), never a copy of the
  live state.
  To bring it forward, the rows of the shots the new records touch are decoded (at most a few
  thousand at a time, then encoded again) and the new records folded into them; writing joins
  the rows into body lines. It starts from the snapshot on disk when that is usable (rows taken
  as they are, checked by their CRC), else from an empty state and the whole log.
- **The event loop:** nothing runs on it but starting and stopping the thread; appends never
  wait for a snapshot. What the thread costs the loop is the GIL: it hands it over after every
  slice of its own CPU time (:attr:`Policy.slice_s`, 2 ms), so a loop that wants it waits at
  most that long, and otherwise it takes what the loop leaves (file reads, writes and fsyncs
  release the GIL anyway). Over a run it folds each record once (about 1.4 times the CPU of
  replaying the log: the rows of the shots touched are decoded and encoded again) and writes
  each snapshot (mostly C and I/O): on an idle core while a run waits on its providers, but a
  process that only appends pays it in its own time (benchmarks/run.py, ``scenario_replay``).
- **Failures:** a snapshot is derived data. Writing goes through a temporary file, fsync and
  rename (a kill leaves the old snapshot or the new one, and at most a temporary file, which the
  next run removes); a failure to write is logged as a warning and tried again later; a log the
  thread cannot fold (a bad line) stops it with a warning. Nothing of it ever fails the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import orjson

from pipeline.errors import CheckpointError
from pipeline.journal import snapformat as fmt
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE as LOG
from pipeline.journal.checkpoint import Checkpoint, Fold, parse
from pipeline.journal.snapshot import Encoded
from pipeline.journal.state import RunState, ShotRecord, folder

log = logging.getLogger("pipeline")


@dataclass(frozen=True, slots=True)
class Policy:
    """When :class:`Snapshotter` writes a snapshot, and how much of the CPU it may take.

    Attributes:
        min_growth: records the log must have grown by since the last snapshot (at least).
        growth: and at least this fraction of the records the last snapshot covers.
        min_interval_s: seconds between the end of a snapshot and the start of the next one.
        check_s: how often the log's size is looked at (a ``stat``).
        busy: the fraction of one CPU the thread may use, sleeping the rest (1.0: all it is
            given, handing the GIL over after each slice).
        slice_s: the thread's CPU time between two such hand-overs (or sleeps).
    """

    min_growth: int = 10_000
    growth: float = 0.05
    min_interval_s: float = 30.0
    check_s: float = 2.0
    busy: float = 1.0
    slice_s: float = 0.002


#: The policy of :func:`periodic` when none is given.
POLICY = Policy()
#: Seconds :meth:`Snapshotter.stop` waits for the thread (it stops at its next slice).
STOP_TIMEOUT_S = 30.0

_READ = 64 * 1024  # log bytes read and folded at a time
_ROUNDS = 3  # times a snapshot reads on to the log's new end before it is written
# A record's shot as the checkpoint writes it (sorted compact JSON: "shot" is a reserved key, and
# a quote inside a string is escaped): every shot named in some bytes, and maybe a few more.
_SHOT_ID = re.compile(rb'"shot":"([^"\\]*(?:\\.[^"\\]*)*)"')
_HELD = 4096  # shots held decoded while folding; then they are encoded back into rows
_LINE_BYTES = 200  # an estimate of a log line, before any snapshot measured the real mean


class _Stopped(Exception):
    """The snapshotter was asked to stop."""


class _Pacer:
    """Hands the GIL over after every ``slice_s`` of a thread's CPU time; sleeps for ``busy``.

    Counted in the thread's CPU time: the time it waits for the GIL is the event loop's.
    """

    def __init__(self, policy: Policy, stop: threading.Event) -> None:
        self.policy = policy
        self.stop = stop
        self.since = time.thread_time()

    def __call__(self) -> None:
        """Call often while working: sleeps when a slice is used up.

        Raises:
            _Stopped: the thread was asked to stop.
        """
        worked = time.thread_time() - self.since
        if worked >= self.policy.slice_s:
            busy = self.policy.busy
            if busy < 1.0:
                self.stop.wait(worked * (1.0 - busy) / busy)
            else:
                time.sleep(0)  # lets a thread waiting for the GIL have it
            self.since = time.thread_time()
        if self.stop.is_set():
            raise _Stopped


class _Touched(dict[str, ShotRecord]):
    """The shots of a fold: those its records name, decoded from their rows before it runs.

    The fold adds a shot (``shots[id] = ShotRecord(id)``) only when it is new to the log: one it
    adds that has a row would have been folded from scratch, so that raises instead.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: dict[str, bytes]) -> None:
        super().__init__()
        self.rows = rows

    def __setitem__(self, key: str, value: ShotRecord) -> None:
        if key in self.rows:
            raise CheckpointError(f"the record of shot {key!r} was not spelled as written")
        dict.__setitem__(self, key, value)


class Shadow:
    """The state of a prefix of a log as encoded rows, brought forward by reading the log.

    Attributes:
        run_dir: the run directory.
        enc: the prefix and its state (consistent between calls; not during :meth:`advance`).
    """

    def __init__(self, run_dir: Path, enc: Encoded, pace: _Pacer) -> None:
        self.run_dir = run_dir
        self.enc = enc
        self._pace = pace

    @classmethod
    def start(cls, run_dir: Path, pace: _Pacer) -> Shadow:
        """From the run's snapshot when it is usable, else from the start of the log."""
        path = run_dir / snapshot.FILE
        try:
            with (run_dir / LOG).open("rb") as fh:
                enc = snapshot.read_encoded(path, fh, pace)
        except (OSError, ValueError) as exc:  # the fold starts from the first record
            if path.exists():
                log.debug("periodic snapshots: not starting from %s: %s", path, exc)
            enc = Encoded()
        return cls(run_dir, enc, pace)

    def advance(self) -> int:
        """Fold the complete lines written after the prefix, up to the log's end.

        The end moves while this runs: it reads on to the new end up to :data:`_ROUNDS` times,
        as long as there is less to read each time (a thread slower than the appends stops).

        Returns:
            The number of records folded.

        Raises:
            CheckpointError: a line the reader would not accept (then ``enc`` is unusable).
            OSError: the log cannot be read (then ``enc`` is unusable).
            _Stopped: from the pacer (then ``enc`` is unusable).
        """
        enc = self.enc
        state = RunState(**enc.run)
        state.shots = shots = _Touched(enc.rows)
        fold = folder(state)
        folded = enc.lines
        with (self.run_dir / LOG).open("rb") as fh:
            fh.seek(enc.offset)
            pending = b""  # the start of a line not yet complete
            before = math.inf
            for _ in range(_ROUNDS):  # then what was appended meanwhile, while that gets less
                left = os.fstat(fh.fileno()).st_size - enc.offset - len(pending)
                if left <= 0 or left >= before:
                    break
                before = left
                while left > 0 and (block := fh.read(min(_READ, left))):
                    left -= len(block)
                    data = pending + block if pending else block
                    end = data.rfind(b"\n") + 1
                    pending = data[end:]
                    if end:
                        self._fold(data[:end] if pending else data, shots, fold)
                        if len(shots) >= _HELD:
                            self._encode(state)
                    self._pace()
        self._encode(state)
        return enc.lines - folded

    def _fold(self, lines: bytes, shots: _Touched, fold: Fold) -> None:
        """Fold complete ``lines``, the log's next bytes, into ``shots``; advance the prefix.

        The shots their records name are decoded first (the fold itself is the reader's: no
        Python call of ours per record).
        """
        enc = self.enc
        try:
            first = orjson.loads(lines[: lines.index(b"\n")]).get("seq")
        except (ValueError, AttributeError):
            first = None  # a bad line: parse says so
        if first.__class__ is int and first <= enc.seq:
            raise CheckpointError(f"sequence {first} does not follow {enc.seq}")
        rows, decode_row = enc.rows, fmt.decode_row
        for raw in set(_SHOT_ID.findall(lines)):  # every shot named (and maybe a few more)
            sid = orjson.loads(b'"%s"' % raw) if b"\\" in raw else raw.decode()
            if sid not in shots and sid in rows:
                dict.__setitem__(shots, sid, decode_row(rows[sid]))
        loaded = parse(lines, name=LOG, fold=fold)
        if loaded.tail:
            raise CheckpointError(f"a bad line after byte {enc.offset + loaded.good_bytes}")
        enc.log_crc = zlib.crc32(lines, enc.log_crc)
        enc.lines += lines.count(b"\n")
        enc.offset += len(lines)
        enc.seq = loaded.last_seq  # > 0: lines holds complete lines, all of them good

    def _encode(self, state: RunState) -> None:
        """Move the decoded shots of ``state`` back into rows (in place: the fold holds them)."""
        rows, encode_row = self.enc.rows, fmt.encode_row
        for n, (sid, rec) in enumerate(state.shots.items()):
            rows[sid] = encode_row(rec)  # a shot new to the log goes last, as in the state
            if n % 256 == 255:
                self._pace()
        state.shots.clear()
        self.enc.run = {name: getattr(state, name) for name in fmt.RUN}

    def write(self) -> Path:
        """Write the snapshot of the prefix (atomic replace).

        Raises:
            OSError: it cannot be written.
            _Stopped: from the pacer (the old snapshot stays).
        """
        return snapshot.write_encoded(self.run_dir, self.enc, self._pace)


class Snapshotter:
    """The thread writing a run's snapshots while it runs (:func:`periodic` starts and stops it).

    Attributes:
        run_dir: the run directory (its log is locked by the runner).
        policy: when to write.
        written: snapshots written so far.
        covered: ``(bytes, seq)`` of the log prefix the last one covers (``(0, 0)``: none yet).
    """

    def __init__(self, run_dir: Path, policy: Policy = POLICY) -> None:
        self.run_dir = run_dir
        self.policy = policy
        self.written = 0
        self.covered = (0, 0)
        self._stop = threading.Event()
        self._pace = _Pacer(policy, self._stop)
        self._thread = threading.Thread(target=self._main, name="pipeline-snapshot", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (blocking): a snapshot being written is given up, the old one stays.

        Waits up to :data:`STOP_TIMEOUT_S` (the thread stops at its next slice, or after a file
        operation under way).
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)

    def _main(self) -> None:
        try:
            self._run()
        except _Stopped:
            pass
        except Exception as exc:  # derived data: the run goes on without
            log.warning("periodic state snapshots of %s stopped: %s", self.run_dir, exc)

    def _run(self) -> None:
        self._sweep()
        covered = self._on_disk()  # (bytes, lines), as its header says: checked when used
        shadow: Shadow | None = None
        last = -math.inf
        policy = self.policy
        while not self._stop.wait(policy.check_s):
            if time.monotonic() - last < policy.min_interval_s or not self._due(*covered):
                continue
            began, cpu = time.monotonic(), time.thread_time()
            self._pace.since = cpu
            if shadow is None:
                shadow = Shadow.start(self.run_dir, self._pace)
            try:
                folded = shadow.advance()
            except BaseException:
                shadow = None  # half brought forward: start again from the snapshot next time
                raise
            try:
                shadow.write()
            except OSError as exc:
                log.warning("could not write a state snapshot of %s: %s", self.run_dir, exc)
            else:
                enc = shadow.enc
                covered = (enc.offset, enc.lines)
                self.covered = (enc.offset, enc.seq)
                self.written += 1
                took, cpu = time.monotonic() - began, time.thread_time() - cpu
                what = "state snapshot of %s through seq %d: %d records folded, %.2f s (%.2f CPU)"
                log.debug(what, self.run_dir, enc.seq, folded, took, cpu)
            last = time.monotonic()

    def _due(self, offset: int, lines: int) -> bool:
        """Whether the log has grown enough since the prefix ``(offset, lines)``."""
        try:
            size = os.stat(self.run_dir / LOG).st_size
        except OSError:
            return False
        if size < offset:  # the snapshot on disk is not this log's: it will not be used
            offset = lines = 0
        mean = offset / lines if lines else _LINE_BYTES
        grown = (size - offset) / mean
        return grown >= max(self.policy.min_growth, self.policy.growth * lines)

    def _on_disk(self) -> tuple[int, int]:
        """``(offset, lines)`` in the header of the snapshot on disk, unchecked; else (0, 0)."""
        try:
            with (self.run_dir / snapshot.FILE).open("rb") as fh:
                header = fmt.parse_header(fh.readline())
        except (OSError, ValueError):
            return 0, 0
        return header["offset"], header["lines"]

    def _sweep(self) -> None:
        """Remove what killed snapshot writers left (the run holds the lock: none is at work)."""
        names = [f".{snapshot.FILE}.*.tmp", f"{snapshot.FILE}.body"]
        for path in [p for name in names for p in self.run_dir.glob(name)]:
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.asynccontextmanager
async def periodic(ckpt: Checkpoint, policy: Policy | None = None) -> AsyncIterator[Snapshotter]:
    """Write snapshots of ``ckpt``'s log while the block runs (see the module's docstring).

    ``async with periodic(ckpt): ...`` around the work of a run, inside the lock (the checkpoint
    is open). Leaving the block stops the thread (a snapshot under way is given up); the snapshot
    at the end of a run is :func:`~pipeline.journal.snapshot.after_run`'s. Never raises for a
    snapshot: failures are logged.
    """
    writer = Snapshotter(ckpt.run_dir, policy or POLICY)
    try:
        writer.start()
    except RuntimeError as exc:  # no thread to be had: the run goes on without
        log.warning("no periodic state snapshots of %s: %s", ckpt.run_dir, exc)
    try:
        yield writer
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(writer.stop)
