"""transfer.download.write_verified: the one-hop path of small bodies, the hashing and writing
threads of large ones (bounded memory, early writeback, errors, cancellation), the part-file
checks, and the playability check of both paths (``expect``). More on the threads themselves:
tests/test_writebehind.py."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline._util import fsutil
from pipeline.errors import FetchError
from pipeline.models import Artifact, Download
from pipeline.transfer import download, writebehind
from pipeline.transfer.download import write_verified
from pipeline.transfer.playable import Expected, UnplayableVideo
from tests.fakes import clip, padded

#: What the fake's shots ask: 2 s, the default tolerance.
TWO_S = Expected(2, "fake")

MAGIC = b"\x00\x00\x00\x18ftypisom"


def _body(n: int, seed: int = 1) -> bytes:
    return MAGIC + random.Random(seed).randbytes(n - len(MAGIC))


async def _chunks(
    body: bytes, step: int, on_yield: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    for i in range(0, len(body), step):
        if on_yield is not None:
            on_yield(i)
        yield body[i : i + step]


async def _record(_: Artifact, publish: Callable[[], None]) -> None:
    return None


def _writers() -> list[threading.Thread]:
    """Hashing and writing threads still alive (each is done with its file; it may be returning)."""
    threads = [t for t in threading.enumerate() if t.name in ("pipeline-write", "pipeline-hash")]
    for thread in threads:
        thread.join(2.0)
    return [t for t in threads if t.is_alive()]


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return hops


async def test_small_body_is_created_written_and_synced_in_one_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = _count_hops(monkeypatch)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    body = padded(clip(2), download.FLUSH_BYTES - 1)  # a real video: the check is in the hop
    final = tmp_path / "shots" / "a.mp4"

    async def record(art: Artifact, publish: Callable[[], None]) -> None:
        assert synced  # fsynced before it is recorded
        assert final.with_name("a.mp4.part").read_bytes() == body
        assert not final.exists()

    art = await write_verified(
        Download(_chunks(body, 65536), size=len(body)),
        final,
        max_bytes=len(body),
        record=record,
        expect=TWO_S,
    )
    # check + open + write + fsync + close, then the rename
    assert hops == ["_check_then_finish", "_publish"]
    assert final.read_bytes() == body
    assert art.size == len(body)
    assert art.sha256 == hashlib.sha256(body).hexdigest()
    assert not final.with_name("a.mp4.part").exists()
    assert not _writers()


async def test_rejected_small_body_never_touches_the_disk(tmp_path: Path) -> None:
    final = tmp_path / "a.mp4"
    stale = tmp_path / "a.mp4.part"
    for body, size, match in (
        (b"<html>502 Bad Gateway</html>" * 10, None, "not an MP4"),
        (_body(5000), 6000, "short body"),
    ):
        with pytest.raises(FetchError, match=match):
            await write_verified(
                Download(_chunks(body, 1000), size=size), final, max_bytes=10**6, record=_record
            )
        assert list(tmp_path.iterdir()) == []
    stale.write_bytes(b"from an interrupted fetch")
    body = _body(3000)
    await write_verified(Download(_chunks(body, 1000)), final, max_bytes=10**6, record=_record)
    assert final.read_bytes() == body
    assert not stale.exists()  # replaced by the new part, then renamed


@pytest.mark.parametrize("announced", [True, False])
@pytest.mark.parametrize("size", [download.FLUSH_BYTES, 3 * download.FLUSH_BYTES + 12345])
async def test_large_body_is_written_behind_with_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, announced: bool
) -> None:
    advised: list[tuple[int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length))

    monkeypatch.setattr(os, "posix_fadvise", fadvise, raising=False)
    monkeypatch.setattr(writebehind, "DIRECT", False)  # buffered: the writeback hints
    monkeypatch.setattr(writebehind, "SLOT_BYTES", 256 * 1024)  # small slots: small bodies
    real = fsutil.write_all

    def slow(fd: int, data: bytes | memoryview) -> None:  # the disk is slower than the network
        time.sleep(0.002)
        real(fd, data)

    monkeypatch.setattr(writebehind, "write_all", slow)
    body = _body(size, seed=size)
    final = tmp_path / "big.mp4"
    part = tmp_path / "big.mp4.part"
    step = 100_003
    worst = 0

    def on_yield(offset: int) -> None:  # bytes read but not yet in the part file
        nonlocal worst
        written = part.stat().st_size if part.exists() else 0
        worst = max(worst, offset - written)

    art = await write_verified(
        Download(_chunks(body, step, on_yield), size=len(body) if announced else None),
        final,
        max_bytes=len(body),
        record=_record,
    )
    assert final.read_bytes() == body
    assert art.sha256 == hashlib.sha256(body).hexdigest()
    # at most the slots being hashed and written, or, when the size is not announced, the
    # first batch read before the body is known to be large (then copied into the slots)
    slots = writebehind.SLOTS * writebehind.SLOT_BYTES
    first = 0 if announced else download.FLUSH_BYTES
    assert slots <= download.FLUSH_BYTES
    assert worst <= max(first, slots) + step
    if size > 2 * download.FLUSH_BYTES:  # the reading did run ahead, up to the bound
        assert worst > slots - writebehind.SLOT_BYTES
    assert not _writers()
    if size > 2 * writebehind.WRITEBACK_BYTES:  # each range: written back, then evicted
        ends = [off + n for off, n in advised]
        assert ends == sorted(ends)
        assert ends[-1] <= size
        assert advised[0][0] == 0
        assert [off for off, _ in advised[1:]] == [0, *ends[:-2]]


async def test_tiny_chunks_are_copied_into_slots_in_order(tmp_path: Path) -> None:
    body = _body(download.FLUSH_BYTES + 300_001, seed=7)
    art = await write_verified(
        Download(_chunks(body, 997), size=len(body)),
        tmp_path / "t.mp4",
        max_bytes=len(body),
        record=_record,
    )
    assert art.sha256 == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "t.mp4").read_bytes() == body


async def test_write_error_behind_the_read_fails_the_fetch_and_removes_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = fsutil.write_all

    def failing(fd: int, data: bytes | memoryview) -> None:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(writebehind, "write_all", failing)
    monkeypatch.setattr(writebehind, "SLOT_BYTES", 256 * 1024)  # the 11th write: at 2.75 MB
    body = _body(6 * download.FLUSH_BYTES)
    read = 0

    def on_yield(offset: int) -> None:
        nonlocal read
        read = offset

    with pytest.raises(FetchError, match=r"writing big\.mp4\.part failed: No space left"):
        await write_verified(
            Download(_chunks(body, 65536, on_yield), size=len(body)),
            tmp_path / "big.mp4",
            max_bytes=len(body),
            record=_record,
        )
    assert read < len(body) - download.FLUSH_BYTES  # the failure stopped the reading early
    assert list(tmp_path.iterdir()) == []
    assert not _writers()


@pytest.mark.parametrize("size", [1000, 3 * download.FLUSH_BYTES])
async def test_planted_symlinks_are_refused_before_anything_is_written(
    tmp_path: Path, size: int
) -> None:
    target = tmp_path / "target.mp4"
    target.write_bytes(b"precious")
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "a.mp4").symlink_to(target)
    body = _body(size)
    with pytest.raises(FetchError, match="not a regular file"):
        await write_verified(
            Download(_chunks(body, 65536), size=size),
            shots / "a.mp4",
            max_bytes=size,
            record=_record,
        )
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in shots.iterdir()) == ["a.mp4"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(FetchError, match="symbolic link"):
        await write_verified(
            Download(_chunks(body, 65536), size=size),
            tmp_path / "linked" / "a.mp4",
            max_bytes=size,
            record=_record,
        )
    assert list(elsewhere.iterdir()) == []
    assert not _writers()


async def test_cancelled_mid_body_leaves_no_part_and_no_thread(tmp_path: Path) -> None:
    body = _body(8 * download.FLUSH_BYTES)
    reached = anyio.Event()
    # more than the slots hold: the reading has waited for the writing, which created the part
    stall = writebehind.SLOTS * writebehind.SLOT_BYTES + download.FLUSH_BYTES
    assert stall < len(body)

    async def stalling() -> AsyncIterator[bytes]:
        async for chunk in _chunks(body[:stall], 65536):
            yield chunk
        reached.set()
        await anyio.sleep_forever()
        yield b""

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: write_verified(
                Download(stalling(), size=len(body)),
                tmp_path / "c.mp4",
                max_bytes=len(body),
                record=_record,
            )
        )
        await reached.wait()
        assert (tmp_path / "c.mp4.part").exists()
        tg.cancel_scope.cancel()
    assert list(tmp_path.iterdir()) == []
    assert not _writers()


async def test_cap_is_enforced_while_streaming_a_large_body(tmp_path: Path) -> None:
    cap = 2 * download.FLUSH_BYTES
    body = _body(3 * download.FLUSH_BYTES)
    with pytest.raises(FetchError, match="exceeds the cap") as info:
        await write_verified(
            Download(_chunks(body, 65536)), tmp_path / "x.mp4", max_bytes=cap, record=_record
        )
    assert info.value.rejected
    assert list(tmp_path.iterdir()) == []
    assert not _writers()


async def test_unplayable_small_body_is_refused_before_it_touches_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = _count_hops(monkeypatch)
    real = clip(2)

    async def record(art: Artifact, publish: Callable[[], None]) -> None:
        raise AssertionError("an unplayable video must not be recorded")

    for body, match in (
        (real[:1200], r"truncated at 1,200 bytes \(no frames\)"),
        (real[:32] + random.Random(5).randbytes(4000), "do not open as a video"),
        (clip(5), r"duration 5\.0 s, asked 2 s"),
    ):
        with pytest.raises(UnplayableVideo, match=match) as info:
            await write_verified(
                Download(_chunks(body, 1000), size=len(body)),
                tmp_path / "a.mp4",
                max_bytes=10**6,
                record=record,
                expect=TWO_S,
            )
        assert not info.value.rejected  # fetched again by the retry loop, not refused at once
        assert list(tmp_path.iterdir()) == []
    assert hops == ["_check_then_finish"] * 3  # the check and the write share the one hop


@pytest.mark.parametrize("announced", [True, False])
async def test_large_body_is_checked_from_its_part_file_before_it_is_recorded(
    tmp_path: Path, announced: bool
) -> None:
    body = padded(clip(2), 2 * download.FLUSH_BYTES + 999, seed=2)
    final = tmp_path / "big.mp4"
    recorded: list[Artifact] = []

    async def record(art: Artifact, publish: Callable[[], None]) -> None:
        assert final.with_name("big.mp4.part").read_bytes() == body
        recorded.append(art)

    art = await write_verified(
        Download(_chunks(body, 65536), size=len(body) if announced else None),
        final,
        max_bytes=len(body),
        record=record,
        expect=TWO_S,
    )
    assert recorded == [art]
    assert final.read_bytes() == body
    # the same size of noise behind a container signature: written behind, then refused
    bad = _body(len(body), seed=3)
    with pytest.raises(UnplayableVideo, match="not a playable video"):
        await write_verified(
            Download(_chunks(bad, 65536), size=len(bad) if announced else None),
            tmp_path / "bad.mp4",
            max_bytes=len(bad),
            record=record,
            expect=TWO_S,
        )
    assert recorded == [art]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.mp4"]  # no part left behind
    assert not _writers()
