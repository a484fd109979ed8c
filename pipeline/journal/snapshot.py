"""A state snapshot: the replayed state of a log prefix, so that a reader folds only the tail.

``RUN_DIR/checkpoint.snapshot`` (mode 0600, like the log: it holds what the log holds, one-time
result URLs included, and nothing more) is derived data; the log stays the only source of truth.
Its lines (compact JSON, one per line)::

    {"v":1,"offset":B,"seq":S,"lines":L,"log_crc":"…","body_crc":"…","fields":{…},"run":{…},…}
    [[shot row],[shot row],…]     up to 1024 shots a line, in the state's order (the format:
    [[shot row],…]                :mod:`pipeline.journal.snapformat`)

- the header describes the log prefix it covers: its length ``B`` in bytes, the ``seq`` of its
  last record, its number of lines and the CRC32 of its bytes; ``body_crc`` is the CRC32 of
  everything after the header line; ``fields`` names the layout of the rows, ``run`` holds the
  run-level fields of :class:`~pipeline.journal.state.RunState`;
- values are the state's own, in JSON (enums by value): the log's values went through the same
  JSON, so the state read back equals the replayed one field for field.

Reading (:func:`prefix_into`, :func:`open_state`) uses a snapshot only when it is readable, of this
version and layout, intact, and the log starts with exactly the bytes it covers; otherwise it is
ignored (logged at debug level) and the whole log is replayed. Writing (:func:`write_snapshot`
from a state, :func:`write_encoded` from encoded rows) replaces the file atomically. The runner
writes one at the end of a run whose log has more than :data:`MIN_RECORDS` records
(:func:`after_run`), and others while it runs (:mod:`pipeline.journal.snapshotter`).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson

from pipeline._util.fsutil import write_all
from pipeline._util.gcutil import gc_paused
from pipeline.journal import snapformat as fmt
from pipeline.journal.checkpoint import FILE as LOG
from pipeline.journal.checkpoint import Checkpoint, Loaded, Prefix, PrefixHook, load
from pipeline.journal.snapformat import RUN, Stale, prefix_crc
from pipeline.journal.snapformat import VERSION as VERSION
from pipeline.journal.state import RunState, folder

log = logging.getLogger("pipeline")

FILE = "checkpoint.snapshot"
#: The runner writes a snapshot at the end of a run only when the log has more records than this.
MIN_RECORDS = 10_000


def snapshot_path(log_path: Path) -> Path:
    """The snapshot of the log at ``log_path``: ``checkpoint.jsonl`` -> ``checkpoint.snapshot``."""
    return log_path.with_suffix(".snapshot")


def _nothing() -> None:
    pass


@dataclass(slots=True)
class Encoded:
    """The state of a log prefix with its shots as encoded rows: what a snapshot holds.

    What :mod:`pipeline.journal.snapshotter` keeps between snapshots: a third of the memory of
    the state itself (:func:`pipeline.journal.fmt.encode_row`).

    Attributes:
        offset / seq / lines: the prefix: its bytes, the seq of its last record, its lines.
        log_crc: the CRC32 of its bytes.
        run: the run-level fields of its :class:`RunState` (:data:`fmt.RUN`).
        rows: shot id -> the shot's row (:func:`fmt.encode_row`), in the state's order.
    """

    offset: int = 0
    seq: int = 0
    lines: int = 0
    log_crc: int = 0
    run: dict[str, Any] = field(default_factory=lambda: {n: getattr(RunState(), n) for n in RUN})
    rows: dict[str, bytes] = field(default_factory=dict)


def write_snapshot(run_dir: Path, state: RunState, *, offset: int, last_seq: int) -> Path:
    """Write ``state`` as the snapshot of the first ``offset`` bytes of ``run_dir``'s log.

    ``state`` must be what replaying exactly those bytes gives (records up to ``last_seq``), and
    those bytes must be durable (e.g. ``offset, last_seq = ckpt.position`` after a sync). The
    file is written beside the log through a temporary file, fsynced, renamed over the old one
    (mode 0600) and the directory fsynced: readers see the old snapshot or the new one.

    Args:
        run_dir: the run directory (holding ``checkpoint.jsonl``).
        state: the run state at ``offset``.
        offset: length in bytes of the log prefix ``state`` reflects (ends after a newline).
        last_seq: ``seq`` of the last record in that prefix.

    Returns:
        The snapshot's path, ``run_dir/checkpoint.snapshot``.

    Raises:
        OSError: the log cannot be read or the snapshot written.
        ValueError: the log is shorter than ``offset``, or a state value is not JSON.
    """
    with (run_dir / LOG).open("rb") as fh:
        log_crc, lines = prefix_crc(fh, offset)
    run = {name: getattr(state, name) for name in RUN}
    dest = run_dir / FILE
    # The body goes to a side file as it is encoded (never all in memory: ~300 bytes a shot),
    # its CRC computed on the way; then header + body are copied into the snapshot.
    side = dest.with_name(dest.name + ".body")
    body_crc = 0
    try:
        with side.open("wb") as out, gc_paused():
            os.fchmod(out.fileno(), 0o600)
            for line in fmt.state_lines(state):
                body_crc = zlib.crc32(line, body_crc)
                out.write(line)
        header = fmt.header_of(offset, last_seq, lines, log_crc, body_crc, run, len(state.shots))

        def copy(fd: int) -> None:
            with side.open("rb") as body:
                while block := body.read(fmt.BLOCK):
                    write_all(fd, block)

        fmt.install(dest, header, copy)
    finally:
        side.unlink(missing_ok=True)
    return dest


def write_encoded(run_dir: Path, enc: Encoded, between: Callable[[], None] = _nothing) -> Path:
    """Write ``enc`` as ``run_dir``'s snapshot (as :func:`write_snapshot` does a state).

    ``enc`` must be the state of the first ``enc.offset`` bytes of the log, with their CRC32
    (nothing here reads the log again), and must not change while this runs. ``between()`` is
    called between lines of the body; whatever it raises stops the writing and leaves the old
    snapshot in place.

    Raises:
        OSError: the snapshot cannot be written.
        Exception: whatever ``between`` raises.
    """
    body_crc = 0
    for line in fmt.row_lines(enc.rows.values()):  # the CRC first: it is in the header
        body_crc = zlib.crc32(line, body_crc)
        between()
    header = fmt.header_of(
        enc.offset, enc.seq, enc.lines, enc.log_crc, body_crc, enc.run, len(enc.rows)
    )

    def body(fd: int) -> None:
        for line in fmt.row_lines(enc.rows.values()):
            write_all(fd, line)
            between()

    fmt.install(run_dir / FILE, header, body)
    return run_dir / FILE


def _decode(lines: Iterable[bytes], header: dict[str, Any]) -> RunState:
    """The RunState of a snapshot's body lines (with their newlines), checked against ``header``.

    The body is read a line at a time (not held whole) and its CRC checked at the end.

    Raises:
        Stale: the body does not match its checksum, or a row does not fit the layout.
    """
    state = RunState(**header["run"])
    shots = state.shots
    loads = orjson.loads
    crc32 = zlib.crc32
    record = fmt.record
    crc = 0
    try:
        with gc_paused():  # as for a replay: many long-lived objects, no cycles
            for line in lines:
                crc = crc32(line, crc)
                for values in loads(line):
                    rec = record(values)
                    shots[rec.id] = rec
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise Stale(f"a damaged body or a row that does not fit: {exc!r}") from None
    if crc != header["body_crc"]:
        raise Stale("the body does not match its checksum")
    if len(shots) != header["shots"]:
        raise Stale("wrong number of shots")
    return state


def read_snapshot(path: Path, log: BinaryIO) -> tuple[RunState, Prefix]:
    """The state in the snapshot at ``path`` and the prefix of ``log`` (an open file) it covers.

    Raises:
        ValueError: the snapshot cannot be used: unreadable, damaged, another version or
            layout, or ``log`` does not start with exactly the bytes it was made from (stale).
            The message says why.
    """
    try:
        with path.open("rb") as fh:
            header = fmt.parse_header(fh.readline())
            with fmt.PrefixCheck(log, header):
                state = _decode(fh, header)
    except OSError as exc:
        raise Stale(f"cannot read: {exc.strerror or exc}") from None
    return state, Prefix(offset=header["offset"], seq=header["seq"], lines=header["lines"])


def read_encoded(path: Path, log: BinaryIO, between: Callable[[], None] = _nothing) -> Encoded:
    """The snapshot at ``path`` as :class:`Encoded` rows, checked as :func:`read_snapshot` does.

    Rows are checked by the body's CRC, not decoded (that happens to those a fold touches).
    ``between()`` is called after each line of the body (whatever it raises is raised).

    Raises:
        ValueError: the snapshot cannot be used (as :func:`read_snapshot`).
    """
    loads, dumps, crc32 = orjson.loads, orjson.dumps, zlib.crc32
    rows: dict[str, bytes] = {}
    crc = 0
    try:
        with path.open("rb") as fh, gc_paused():
            header = fmt.check_header(fh, log)
            for line in fh:
                crc = crc32(line, crc)
                for values in loads(line):  # a row's first field is the shot id
                    rows[values[0]] = bytes(memoryview(dumps(values)))  # see encode_row
                between()
    except OSError as exc:
        raise Stale(f"cannot read: {exc.strerror or exc}") from None
    except (ValueError, LookupError, TypeError) as exc:
        raise Stale(f"a damaged body: {exc!r}") from None
    if crc != header["body_crc"] or len(rows) != header["shots"]:
        raise Stale("the body does not match its checksum")
    return Encoded(
        header["offset"], header["seq"], header["lines"], header["log_crc"], header["run"], rows
    )


def prefix_into(state: RunState, log_path: Path) -> PrefixHook:
    """A :data:`~pipeline.journal.checkpoint.PrefixHook` starting ``state`` from the snapshot.

    For ``load(log_path, ..., fold=folder(state), prefix=prefix_into(state, log_path))`` (and
    :meth:`Checkpoint.open <pipeline.journal.checkpoint.Checkpoint.open>`): when the snapshot
    beside the
    log is usable (:func:`read_snapshot`) its state is put into ``state`` (which must be a new,
    empty RunState, the one the fold was made for) and only the log after it is read; otherwise
    the reason is logged at debug level, ``state`` is left alone and the whole log is replayed.
    It never raises for a bad snapshot.
    """
    path = snapshot_path(log_path)

    def hook(fh: BinaryIO) -> Prefix:
        try:
            if not path.exists():
                return Prefix()
            snap, prefix = read_snapshot(path, fh)
        except (OSError, ValueError) as exc:
            log.debug("ignoring the snapshot %s: %s", path, exc)
            return Prefix()
        for name in RUN:
            setattr(state, name, getattr(snap, name))
        state.shots.update(snap.shots)  # the fold holds this dict
        return prefix

    return hook


def open_state(path: Path) -> tuple[RunState, Loaded]:
    """Replay the log at ``path`` read-only, starting from its snapshot when that is usable.

    What :func:`pipeline.journal.snapshot.load_state` does (no lock, no repair of a torn tail). The
    state
    equals the full replay's; ``Loaded.good_bytes``/``last_seq`` describe the whole log.

    Raises:
        CheckpointError: unreadable log, corruption after the snapshot's prefix (or anywhere,
            when the snapshot is not used), or a newer format version.
    """
    state = RunState()
    loaded = load(path, repair=False, fold=folder(state), prefix=prefix_into(state, path))
    return state, loaded


def _write_for(ckpt: Checkpoint, state: RunState) -> Path | None:
    offset, last_seq = ckpt.position
    if last_seq <= MIN_RECORDS:
        return None
    return write_snapshot(ckpt.run_dir, state, offset=offset, last_seq=last_seq)


async def after_run(ckpt: Checkpoint, state: RunState) -> None:
    """Write the snapshot of ``ckpt``'s log (in a worker thread) when it has enough records.

    Call when everything is appended and synced and ``state`` is the state of the whole log,
    with nothing else changing it (the end of a run). Never raises for a failure to write it:
    that is logged as a warning, and readers replay the log instead.
    """
    try:
        await anyio.to_thread.run_sync(_write_for, ckpt, state)
    except Exception as exc:  # derived data: a failure must not fail the run
        log.warning("could not write the state snapshot of %s: %s", ckpt.run_dir, exc)


def load_state(path: Path) -> RunState:
    """Replay the log at ``path`` as it is read, read-only (no lock, no repair of a torn tail).

    Starts from the log's state snapshot when it has a usable one, then folds only the records
    after it (:func:`open_state`; the same state as a full replay).

    Raises:
        CheckpointError: unreadable file, mid-file corruption, or a newer format version.
    """
    return open_state(path)[0]
