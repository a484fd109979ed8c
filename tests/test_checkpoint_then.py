"""``Checkpoint.append(..., then=...)``: file work that may only happen once a record is durable.

The fetch stage renames a verified video to its final name this way: in the checkpoint's writer
thread, right after the fsync that made its ``fetched`` record durable (one thread hop instead of
two, the fetch order in README, resume semantics).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from pipeline.errors import CheckpointError
from pipeline.journal.checkpoint import FILE, Checkpoint, load
from pipeline.models import Event


async def test_then_runs_after_the_records_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    ckpt = await Checkpoint.open(tmp_path)
    monkeypatch.setattr(os, "fsync", fsync)

    def action() -> None:
        on_disk = (tmp_path / FILE).read_bytes()
        calls.append("then:" + ("written" if b'"ev":"status"' in on_disk else "missing"))

    # ``status`` is not a durable event: ``then`` makes this append sync anyway.
    await ckpt.append(Event.STATUS, "s1", then=action, status="running")
    assert calls == ["fsync", "then:written"]
    await ckpt.close()


async def test_a_failing_then_raises_to_its_appender_only(tmp_path: Path) -> None:
    ckpt = await Checkpoint.open(tmp_path)

    def broken() -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    done: list[str] = []

    def fine() -> None:
        done.append("ok")

    results: dict[str, BaseException | None] = {}

    async def append(shot: str, then: Callable[[], None]) -> None:
        try:
            await ckpt.append(Event.FETCHED, shot, then=then, path=f"shots/{shot}.mp4")
        except OSError as exc:
            results[shot] = exc
        else:
            results[shot] = None

    async with anyio.create_task_group() as tg:  # both may share one write + fsync
        tg.start_soon(append, "bad", broken)
        tg.start_soon(append, "good", fine)
    assert isinstance(results["bad"], OSError)
    assert "cross-device" in str(results["bad"])
    assert results["good"] is None
    assert done == ["ok"]
    # Not a checkpoint failure: both records are durable and the log stays writable.
    await ckpt.append(Event.RUN_FINISHED, None)
    await ckpt.close()
    shots = [r.shot for r in load(tmp_path / FILE, repair=False).records]
    assert sorted(s for s in shots if s) == ["bad", "good"]


async def test_then_never_runs_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = await Checkpoint.open(tmp_path)
    ran: list[bool] = []

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        await ckpt.append(Event.FETCHED, "s1", then=lambda: ran.append(True), path="x.mp4")
    assert ran == []
    monkeypatch.undo()
    await ckpt.close()
