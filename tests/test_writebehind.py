"""transfer.writebehind through write_verified: a large body is hashed off the event loop in whole
slots, memory is bounded by the slots (not the size), a cancellation mid-body stops both threads
and leaves no part file, and full slots are written with ``O_DIRECT`` where the file system
takes it (falling back to buffered writes where it refuses). No timing thresholds."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import random
import threading
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline._util import fsutil
from pipeline.models import Artifact, Download
from pipeline.transfer import download, writebehind
from pipeline.transfer.download import write_verified

MAGIC = b"\x00\x00\x00\x18ftypisom"


def _body(n: int, seed: int = 1) -> bytes:
    return MAGIC + random.Random(seed).randbytes(n - len(MAGIC))


async def _pieces(body: bytes, seed: int = 5) -> AsyncIterator[bytes]:
    """``body`` in pieces of random sizes (1 byte to 70 kB), as a network delivers it."""
    rng, i = random.Random(seed), 0
    while i < len(body):
        n = rng.randint(1, 70_000)
        yield body[i : i + n]
        i += n


async def _record(_: Artifact, publish: Callable[[], None]) -> None:
    return None


def _threads() -> list[threading.Thread]:
    """Hashing and writing threads still alive (joined briefly: one may be returning)."""
    names = ("pipeline-write", "pipeline-hash")
    threads = [t for t in threading.enumerate() if t.name in names]
    for thread in threads:
        thread.join(2.0)
    return [t for t in threads if t.is_alive()]


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


class _SpyDigest:
    """sha256 noting the thread and the size of each update."""

    def __init__(self, calls: list[tuple[int, int]]) -> None:
        self._digest = hashlib.sha256()
        self._calls = calls

    def update(self, data: Any) -> None:
        self._calls.append((threading.get_ident(), len(data)))
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


async def _write_and_check(body: bytes, dest: Path, *, announced: bool = True) -> None:
    """``body`` through write_verified into ``dest``: its sha256 and its bytes come out whole."""
    art = await write_verified(
        Download(_pieces(body), size=len(body) if announced else None),
        dest,
        max_bytes=len(body),
        record=_record,
    )
    assert art.sha256 == hashlib.sha256(body).hexdigest()
    assert dest.read_bytes() == body


@pytest.mark.parametrize("announced", [True, False])
async def test_many_small_pieces_are_hashed_off_the_loop_in_whole_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, announced: bool
) -> None:
    slot = 256 * 1024
    monkeypatch.setattr(writebehind, "SLOT_BYTES", slot)
    calls: list[tuple[int, int]] = []
    spy = types.SimpleNamespace(sha256=lambda: _SpyDigest(calls))
    monkeypatch.setattr(download, "hashlib", spy)
    body = _body(download.FLUSH_BYTES + 5 * slot + 12_345, seed=2)
    await _write_and_check(body, tmp_path / "a.mp4", announced=announced)
    loop_thread = threading.get_ident()
    assert all(ident != loop_thread for ident, _ in calls)  # never on the event loop
    sizes = [n for _, n in calls]
    assert sizes == [slot] * (len(body) // slot) + [len(body) % slot]  # coalesced, in order
    assert not _threads()


async def test_memory_is_bounded_by_the_slots_not_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot, slots = 64 * 1024, 3
    monkeypatch.setattr(writebehind, "SLOT_BYTES", slot)
    monkeypatch.setattr(writebehind, "SLOTS", slots)
    allocated = 0
    real_mmap = mmap.mmap

    def counting(*args: Any) -> Any:
        nonlocal allocated
        allocated += 1
        return real_mmap(*args)

    monkeypatch.setattr(writebehind, "mmap", types.SimpleNamespace(mmap=counting))
    handed = written = worst = 0
    lock = threading.Lock()
    real_batch, real_write = writebehind._Batch, fsutil.write_all

    def batch(*args: Any) -> writebehind._Batch:  # a slot handed to the threads
        nonlocal handed, worst
        made = real_batch(*args)
        with lock:
            handed += len(made.view)
            worst = max(worst, handed - written)
        if handed >= slots * slot:
            gate.set()  # all slots are in flight: the disk goes on
        return made

    def write_all(fd: int, data: Any) -> None:
        nonlocal written
        gate.wait()  # the disk is slower than the network until every slot is in flight
        real_write(fd, data)
        with lock:
            written += len(data)

    monkeypatch.setattr(writebehind, "_Batch", batch)
    monkeypatch.setattr(writebehind, "write_all", write_all)
    for size in (download.FLUSH_BYTES + slot, 8 * download.FLUSH_BYTES + 1):
        gate = threading.Event()
        allocated = handed = written = worst = 0
        body = _body(size, seed=size)
        await _write_and_check(body, tmp_path / f"{size}.mp4")
        assert allocated == slots  # the same few buffers for 4 MB and for 32 MB
        assert worst == slots * slot  # the reading ran ahead up to the slots, never further
        assert not _threads()


async def test_cancelled_while_both_threads_are_busy_leaves_no_part_and_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writebehind, "SLOT_BYTES", 64 * 1024)
    entered, gate = threading.Event(), threading.Event()
    writes = 0
    real_write = fsutil.write_all

    def blocking(fd: int, data: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:  # the second slot: the writer blocks, the slots fill, the reading waits
            entered.set()
            gate.wait()
        real_write(fd, data)

    monkeypatch.setattr(writebehind, "write_all", blocking)
    body = _body(4 * download.FLUSH_BYTES)
    final = tmp_path / "c.mp4"
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: write_verified(
                Download(_pieces(body), size=len(body)), final, max_bytes=len(body), record=_record
            )
        )
        await anyio.to_thread.run_sync(entered.wait)
        assert final.with_name("c.mp4.part").exists()
        tg.cancel_scope.cancel()
        gate.set()  # the write in progress ends; what is queued behind it is skipped
    assert list(tmp_path.iterdir()) == []
    assert writes < len(body) // (64 * 1024)  # stopped, not drained
    assert not _threads()


def _direct_supported(where: Path) -> bool:
    try:
        fd = os.open(where / "probe", os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    os.close(fd)
    (where / "probe").unlink()
    return hasattr(os, "O_DIRECT")


async def test_full_slots_are_written_direct_and_the_tail_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    slot = 256 * 1024
    monkeypatch.setattr(writebehind, "SLOT_BYTES", slot)
    seen: list[tuple[int, bool]] = []
    real_write = fsutil.write_all

    def spying(fd: int, data: Any) -> None:
        seen.append((len(data), _is_direct(fd)))
        real_write(fd, data)

    monkeypatch.setattr(writebehind, "write_all", spying)
    body = _body(download.FLUSH_BYTES + 3 * slot + 5000)
    await _write_and_check(body, tmp_path / "d.mp4")
    full = len(body) // slot
    assert seen[:full] == [(slot, True)] * full
    tail = len(body) % slot
    aligned = tail - tail % writebehind.ALIGN
    assert seen[full:] == [(aligned, True), (tail - aligned, False)]


async def test_a_refused_direct_write_falls_back_to_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    slot = 256 * 1024
    monkeypatch.setattr(writebehind, "SLOT_BYTES", slot)
    seen: list[bool] = []
    real_write = fsutil.write_all

    def refusing(fd: int, data: Any) -> None:
        seen.append(_is_direct(fd))
        if len(seen) == 3:  # half of the third slot goes, then the file system says EINVAL
            os.write(fd, memoryview(data)[: slot // 2])
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_write(fd, data)

    monkeypatch.setattr(writebehind, "write_all", refusing)
    body = _body(download.FLUSH_BYTES + 3 * slot + 5000, seed=9)
    await _write_and_check(body, tmp_path / "e.mp4")
    assert seen[:3] == [True, True, True]
    assert not any(seen[3:])  # buffered from the refusal on
