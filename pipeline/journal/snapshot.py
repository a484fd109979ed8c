"""A state snapshot: the replayed state of a log prefix, so that a reader folds only the tail.

``RUN_DIR/checkpoint.snapshot`` (mode 0600, like the log: it holds what the log holds, one-time
result URLs included, and nothing more) is derived data; the log stays the only source of truth.
Its lines (compact JSON, one per line)::

    {"v":1,"offset":B,"seq":S,"lines":L,"log_crc":"…","body_crc":"…","fields":{…},"run":{…},…}
    [[shot row],[shot row],…]     up to 1024 shots a line, in the state's order; a row holds
    [[shot row],…]                the ShotRecord fields in ``fields["shot"]`` order (``job`` and
                                  ``media`` values as rows in their own field order)

- the header describes the log prefix it covers: its length ``B`` in bytes, the ``seq`` of its
  last record, its number of lines and the CRC32 of its bytes; ``body_crc`` is the CRC32 of
  everything after the header line; ``fields`` names the layout of the rows, ``run`` holds the
  run-level fields of :class:`~pipeline.journal.state.RunState`;
- values are the state's own, in JSON (enums by value): the log's values went through the same
  JSON, so the state read back equals the replayed one field for field.

Reading (:func:`prefix_into`, :func:`open_state`) uses a snapshot only when it is readable, of this
version and layout, intact, and the log starts with exactly the bytes it covers; otherwise it is
ignored (logged at debug level) and the whole log is replayed. Writing (:func:`write_snapshot`)
replaces the file atomically; the runner writes one at the end of a run whose log has more than
:data:`MIN_RECORDS` records (:func:`after_run`).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson

from pipeline._util.fsutil import fsync_dir, replacing, write_all
from pipeline._util.gcutil import gc_paused
from pipeline.journal.checkpoint import FILE as LOG
from pipeline.journal.checkpoint import Checkpoint, Loaded, Prefix, PrefixHook, load
from pipeline.journal.state import RunState, ShotRecord, folder
from pipeline.models import JobHandle, MediaRef, MediaRole, ShotState

log = logging.getLogger("pipeline")

VERSION = 1
FILE = "checkpoint.snapshot"
#: The runner writes a snapshot at the end of a run only when the log has more records than this.
MIN_RECORDS = 10_000

_BLOCK = 1 << 20
_ROWS = 1024  # shots a line: a few large JSON documents, not 200,000 small ones (see _encode_shots)
_SHOT = tuple(f.name for f in fields(ShotRecord))
_JOB = tuple(f.name for f in fields(JobHandle))
_MEDIA = tuple(f.name for f in fields(MediaRef))
_RUN = tuple(f.name for f in fields(RunState) if f.name != "shots")
_FIELDS = {"shot": list(_SHOT), "job": list(_JOB), "media": list(_MEDIA), "run": list(_RUN)}
_I_STATE, _I_JOB, _I_MEDIA = _SHOT.index("state"), _SHOT.index("job"), _SHOT.index("media")
_I_JOB_DATA = _JOB.index("data")
_I_MEDIA_ROLE = _MEDIA.index("role")
_STATES = {s.value: s for s in ShotState}
_ROLES = {r.value: r for r in MediaRole}


class _Stale(ValueError):
    """The snapshot cannot be used (the reason is the message)."""


def snapshot_path(log_path: Path) -> Path:
    """The snapshot of the log at ``log_path``: ``checkpoint.jsonl`` -> ``checkpoint.snapshot``."""
    return log_path.with_suffix(".snapshot")


def _prefix_crc(fh: BinaryIO, offset: int) -> tuple[int, int]:
    """``(CRC32, number of newlines)`` of the first ``offset`` bytes of ``fh``.

    Raises:
        _Stale: the file is shorter than ``offset``.
        OSError: a read failed.
    """
    fh.seek(0)
    crc = lines = 0
    left = offset
    while left:
        block = fh.read(min(_BLOCK, left))
        if not block:
            raise _Stale(f"the log is shorter than the {offset} bytes the snapshot covers")
        crc = zlib.crc32(block, crc)
        lines += block.count(b"\n")
        left -= len(block)
    return crc, lines


def _encode_shots(state: RunState) -> Iterator[bytes]:
    """The body's lines: the shot rows, :data:`_ROWS` a line as a JSON array, with newlines.

    Lines of many rows, because every ``orjson.dumps`` result kept costs a fresh page of memory
    (about 3 µs here): 200,000 of them took longer than the encoding itself.
    """
    row_of = attrgetter(*_SHOT)
    job_of = attrgetter(*_JOB)
    media_of = attrgetter(*_MEDIA)
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    chunk: list[list[Any]] = []
    for rec in state.shots.values():
        row = list(row_of(rec))
        job = rec.job
        if job is not None:
            job_row = list(job_of(job))
            job_row[_I_JOB_DATA] = dict(job.data)
            row[_I_JOB] = job_row
        if rec.media:
            row[_I_MEDIA] = {k: media_of(m) for k, m in rec.media.items()}
        chunk.append(row)
        if len(chunk) == _ROWS:
            yield dumps(chunk, option=newline)  # enums (state, media role) as values
            chunk = []
    if chunk:
        yield dumps(chunk, option=newline)


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
        log_crc, lines = _prefix_crc(fh, offset)
    run = {name: getattr(state, name) for name in _RUN}
    dest = run_dir / FILE
    # The body goes to a side file as it is encoded (never all in memory: ~300 bytes a shot),
    # its CRC computed on the way; then header + body are copied into the snapshot.
    side = dest.with_name(dest.name + ".body")
    body_crc = 0
    try:
        with side.open("wb") as out, gc_paused():
            os.fchmod(out.fileno(), 0o600)
            for line in _encode_shots(state):
                body_crc = zlib.crc32(line, body_crc)
                out.write(line)
        _write_with_header(dest, side, offset, last_seq, lines, log_crc, body_crc, run, state)
    finally:
        side.unlink(missing_ok=True)
    fsync_dir(run_dir)
    return dest


def _write_with_header(
    dest: Path,
    side: Path,
    offset: int,
    last_seq: int,
    lines: int,
    log_crc: int,
    body_crc: int,
    run: dict[str, Any],
    state: RunState,
) -> None:
    header = {
        "v": VERSION,
        "offset": offset,
        "seq": last_seq,
        "lines": lines,
        "log_crc": f"{log_crc:08x}",
        "body_crc": f"{body_crc:08x}",
        "fields": _FIELDS,
        "run": run,
        "shots": len(state.shots),
    }
    with replacing(dest, mode=0o600) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            write_all(fd, orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
            with side.open("rb") as body:
                while block := body.read(1 << 20):
                    write_all(fd, block)
        finally:
            os.close(fd)


def _header(line: bytes) -> dict[str, Any]:
    """The checked header line of a snapshot.

    Raises:
        _Stale: not a snapshot header of this version and layout.
    """
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _Stale("the header is not JSON") from None
    if not isinstance(header, dict):
        raise _Stale("the header is not an object")
    if header.get("v") != VERSION:
        raise _Stale(f"unknown version {header.get('v')!r}")
    if header.get("fields") != _FIELDS:
        raise _Stale("written for another state layout")
    for name in ("offset", "seq", "lines", "shots"):
        value = header.get(name)
        if value.__class__ is not int or value < 0:
            raise _Stale(f"bad {name!r} in the header")
    for name in ("log_crc", "body_crc"):
        value = header.get(name)
        if not isinstance(value, str) or len(value) != 8:
            raise _Stale(f"bad {name!r} in the header")
        header[name] = int(value, 16)  # a ValueError: not hex
    run = header.get("run")
    if not isinstance(run, dict) or sorted(run) != sorted(_RUN):
        raise _Stale("bad run fields")
    return header


def _decode(lines: Iterable[bytes], header: dict[str, Any]) -> RunState:
    """The RunState of a snapshot's body lines (with their newlines), checked against ``header``.

    The body is read a line at a time (not held whole) and its CRC checked at the end.

    Raises:
        _Stale: the body does not match its checksum, or a row does not fit the layout.
    """
    state = RunState(**header["run"])
    shots = state.shots
    loads = orjson.loads
    crc32 = zlib.crc32
    states, roles = _STATES, _ROLES
    i_state, i_job, i_media, i_role = _I_STATE, _I_JOB, _I_MEDIA, _I_MEDIA_ROLE
    crc = 0
    try:
        with gc_paused():  # as for a replay: many long-lived objects, no cycles
            for line in lines:
                crc = crc32(line, crc)
                for row in loads(line):
                    row[i_state] = states[row[i_state]]
                    job = row[i_job]
                    if job is not None:
                        row[i_job] = JobHandle(*job)
                    media = row[i_media]
                    if media:
                        for key, m in media.items():
                            m[i_role] = roles[m[i_role]]
                            media[key] = MediaRef(*m)
                    rec = ShotRecord(*row)
                    shots[rec.id] = rec
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise _Stale(f"a damaged body or a row that does not fit: {exc!r}") from None
    if crc != header["body_crc"]:
        raise _Stale("the body does not match its checksum")
    if len(shots) != header["shots"]:
        raise _Stale("wrong number of shots")
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
            header = _header(fh.readline())
            offset = header["offset"]
            if os.fstat(log.fileno()).st_size < offset:
                raise _Stale(f"the log is shorter than the {offset} bytes the snapshot covers")
            crc, lines = _prefix_crc(log, offset)
            if crc != header["log_crc"] or lines != header["lines"]:
                raise _Stale("the log's first bytes differ from those the snapshot was made from")
            state = _decode(fh, header)
    except OSError as exc:
        raise _Stale(f"cannot read: {exc.strerror or exc}") from None
    return state, Prefix(offset=offset, seq=header["seq"], lines=lines)


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
        for name in _RUN:
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
