"""The snapshot file's format: its header, the checks against the log, the rows, the install.

What a snapshot is and who reads and writes it: :mod:`pipeline.journal.snapshot`. Here:

- the header (:func:`header_of`, :func:`check_header`): the log prefix it covers and the layout;
- the rows: a shot is a JSON array of the :class:`~pipeline.journal.state.ShotRecord` fields in
  :data:`FIELDS` ``["shot"]`` order; ``job`` and ``media`` values are rows in their own field
  order (``media`` a JSON object of them); enums are written by value. The log's values went
  through the same JSON, so a record read back equals the replayed one field for field. A body
  line holds up to :data:`PER_LINE` rows as one JSON array;
- :func:`install`: the atomic replace (temporary file, fsync, rename, directory fsync).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline._util.fsutil import fsync_dir, replacing, write_all
from pipeline.journal.state import RunState, ShotRecord
from pipeline.models import JobHandle, MediaRef, MediaRole, ShotState

VERSION = 1
#: Rows a body line: a few large JSON documents, not 200,000 small ones (see :func:`state_lines`).
PER_LINE = 1024
BLOCK = 1 << 20  # bytes read at a time

_SHOT = tuple(f.name for f in fields(ShotRecord))
_JOB = tuple(f.name for f in fields(JobHandle))
_MEDIA = tuple(f.name for f in fields(MediaRef))
#: The run-level fields of a RunState (the header's ``run``).
RUN = tuple(f.name for f in fields(RunState) if f.name != "shots")
#: The layout of the rows, as the header names it: a snapshot of another layout is not read.
FIELDS = {"shot": list(_SHOT), "job": list(_JOB), "media": list(_MEDIA), "run": list(RUN)}

_I_STATE, _I_JOB, _I_MEDIA = _SHOT.index("state"), _SHOT.index("job"), _SHOT.index("media")
_I_JOB_DATA = _JOB.index("data")
_I_MEDIA_ROLE = _MEDIA.index("role")
_STATES = {s.value: s for s in ShotState}
_ROLES = {r.value: r for r in MediaRole}
_row_of = attrgetter(*_SHOT)
_job_of = attrgetter(*_JOB)
_media_of = attrgetter(*_MEDIA)
assert _SHOT[0] == "id"  # a row's first value is its shot's id (read_encoded relies on it)


class Stale(ValueError):
    """The snapshot cannot be used (the reason is the message)."""


def prefix_crc(fh: BinaryIO, offset: int, *, count_lines: bool = True) -> tuple[int, int]:
    """``(CRC32, number of newlines)`` of the first ``offset`` bytes of ``fh``.

    With ``count_lines`` false the count is 0 and not made: ``zlib.crc32`` lets go of the GIL on
    large blocks, counting does not (:class:`PrefixCheck` runs this beside other work).

    Raises:
        Stale: the file is shorter than ``offset``.
        OSError: a read failed.
    """
    fh.seek(0)
    crc = lines = 0
    left = offset
    while left:
        block = fh.read(min(BLOCK, left))
        if not block:
            raise Stale(f"the log is shorter than the {offset} bytes the snapshot covers")
        crc = zlib.crc32(block, crc)
        if count_lines:
            lines += block.count(b"\n")
        left -= len(block)
    return crc, lines


def header_of(
    offset: int,
    last_seq: int,
    lines: int,
    log_crc: int,
    body_crc: int,
    run: dict[str, Any],
    shots: int,
) -> dict[str, Any]:
    """The header of a snapshot of the log prefix ``(offset, last_seq, lines, log_crc)``."""
    return {
        "v": VERSION,
        "offset": offset,
        "seq": last_seq,
        "lines": lines,
        "log_crc": f"{log_crc:08x}",
        "body_crc": f"{body_crc:08x}",
        "fields": FIELDS,
        "run": run,
        "shots": shots,
    }


def parse_header(line: bytes) -> dict[str, Any]:
    """The checked header line of a snapshot (the CRCs as ints).

    Raises:
        Stale: not a snapshot header of this version and layout.
    """
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise Stale("the header is not JSON") from None
    if not isinstance(header, dict):
        raise Stale("the header is not an object")
    if header.get("v") != VERSION:
        raise Stale(f"unknown version {header.get('v')!r}")
    if header.get("fields") != FIELDS:
        raise Stale("written for another state layout")
    for name in ("offset", "seq", "lines", "shots"):
        value = header.get(name)
        if value.__class__ is not int or value < 0:
            raise Stale(f"bad {name!r} in the header")
    for name in ("log_crc", "body_crc"):
        value = header.get(name)
        if not isinstance(value, str) or len(value) != 8:
            raise Stale(f"bad {name!r} in the header")
        header[name] = int(value, 16)  # a ValueError: not hex
    run = header.get("run")
    if not isinstance(run, dict) or sorted(run) != sorted(RUN):
        raise Stale("bad run fields")
    return header


class PrefixCheck:
    """The check that the log starts with the bytes a snapshot covers, run in a thread.

    ``with PrefixCheck(log, header): decode the body`` checks the log's prefix while the body is
    decoded (2 cores: the check costs no time), and raises on leaving the block when they differ.
    Only the CRC is compared: equal bytes have equal line counts, so the header's ``lines``
    is taken as it is (:func:`prefix_crc` counts them when a snapshot is written).

    Raises (on exit):
        Stale: the log is shorter than the prefix, or its first bytes differ.
        OSError: a read of the log failed.
    """

    def __init__(self, log: BinaryIO, header: dict[str, Any]) -> None:
        self._log, self._header = log, header
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-check")
        self._crc: Future[tuple[int, int]] | None = None

    def __enter__(self) -> PrefixCheck:
        offset = self._header["offset"]
        if os.fstat(self._log.fileno()).st_size < offset:
            raise Stale(f"the log is shorter than the {offset} bytes the snapshot covers")
        # The log is this thread's alone until the block ends (its reader seeks it again).
        self._crc = self._pool.submit(prefix_crc, self._log, offset, count_lines=False)
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        assert self._crc is not None
        try:
            crc, _ = self._crc.result()  # waits; the body's own error, if any, wins below
        finally:
            self._pool.shutdown(wait=True)
        if exc_type is None and crc != self._header["log_crc"]:
            raise Stale("the log's first bytes differ from those the snapshot was made from")


def check_header(fh: BinaryIO, log: BinaryIO) -> dict[str, Any]:
    """The header of the snapshot open in ``fh``, checked against the log open in ``log``.

    Leaves ``fh`` at the start of the body.

    Raises:
        Stale: not a header of this version and layout, or the log does not start with
            exactly the bytes the snapshot covers.
        ValueError: a CRC in the header is not hex.
        OSError: a read failed.
    """
    header = parse_header(fh.readline())
    offset = header["offset"]
    if os.fstat(log.fileno()).st_size < offset:
        raise Stale(f"the log is shorter than the {offset} bytes the snapshot covers")
    crc, lines = prefix_crc(log, offset)
    if crc != header["log_crc"] or lines != header["lines"]:
        raise Stale("the log's first bytes differ from those the snapshot was made from")
    return header


def install(dest: Path, header: dict[str, Any], body: Callable[[int], None]) -> None:
    """Write ``header``, then ``body(fd)`` writes the body; fsync, rename over ``dest`` (0600).

    Readers see the old file or the new one; on an exception (``body``'s included) the old one
    stays and the temporary file is removed.

    Raises:
        OSError: the file cannot be written.
        Exception: whatever ``body`` raises.
    """
    with replacing(dest, mode=0o600) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            write_all(fd, orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
            body(fd)
        finally:
            os.close(fd)
    fsync_dir(dest.parent)


def row(rec: ShotRecord) -> list[Any]:
    """``rec`` as a row (JSON values but for the enums, which orjson writes by value)."""
    out = list(_row_of(rec))
    job = rec.job
    if job is not None:
        job_row = list(_job_of(job))
        job_row[_I_JOB_DATA] = dict(job.data)
        out[_I_JOB] = job_row
    if rec.media:
        out[_I_MEDIA] = {k: _media_of(m) for k, m in rec.media.items()}
    return out


def encode_row(rec: ShotRecord) -> bytes:
    """``rec`` as the JSON of its row, in a bytes object of its own size (to be kept).

    ``orjson.dumps`` returns its result in a buffer sized for growth: 200,000 of them kept took
    800 MB where their copies take 90 MB (the JSON itself is 59 MB).
    """
    return bytes(memoryview(orjson.dumps(row(rec))))


def record(values: list[Any]) -> ShotRecord:
    """The ShotRecord of a decoded row (``values`` is consumed: its job and media are replaced).

    Raises:
        ValueError / LookupError / TypeError / AttributeError: not a row of this layout.
    """
    values[_I_STATE] = _STATES[values[_I_STATE]]
    job = values[_I_JOB]
    if job is not None:
        values[_I_JOB] = JobHandle(*job)
    media = values[_I_MEDIA]
    if media:
        for key, m in media.items():
            m[_I_MEDIA_ROLE] = _ROLES[m[_I_MEDIA_ROLE]]
            media[key] = MediaRef(*m)
    return ShotRecord(*values)


def decode_row(data: bytes) -> ShotRecord:
    """The ShotRecord of a row's JSON (from :func:`encode_row`).

    Raises:
        ValueError / LookupError / TypeError / AttributeError: not a row of this layout.
    """
    values = orjson.loads(data)
    if not isinstance(values, list):
        raise TypeError("a row is a JSON array")
    return record(values)


def state_lines(state: RunState) -> Iterator[bytes]:
    """The body lines of ``state``: its shots' rows, :data:`PER_LINE` a line, with newlines.

    Lines of many rows, because every ``orjson.dumps`` result kept costs a fresh page of memory
    (about 3 µs here): 200,000 of them took longer than the encoding itself.
    """
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    chunk: list[list[Any]] = []
    for rec in state.shots.values():
        chunk.append(row(rec))
        if len(chunk) == PER_LINE:
            yield dumps(chunk, option=newline)  # enums (state, media role) as values
            chunk = []
    if chunk:
        yield dumps(chunk, option=newline)


def row_lines(rows: Iterable[bytes]) -> Iterator[bytes]:
    """The body lines of encoded rows (:func:`encode_row`), :data:`PER_LINE` a line."""
    chunk: list[bytes] = []
    for data in rows:
        chunk.append(data)
        if len(chunk) == PER_LINE:
            yield b"[" + b",".join(chunk) + b"]\n"
            chunk = []
    if chunk:
        yield b"[" + b",".join(chunk) + b"]\n"
