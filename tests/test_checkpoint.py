"""The checkpoint as a write-ahead log: torn tails, corruption, the lock, fail-stop, replay."""

from __future__ import annotations

import errno
import os
import random
import stat
from pathlib import Path

import pytest

from pipeline.errors import CheckpointError, LockedError
from pipeline.journal.checkpoint import FILE, Checkpoint, encode, load, parse
from pipeline.journal.state import replay
from pipeline.models import Event, ShotState


async def write_log(run_dir: Path, shots: int = 4) -> list[int]:
    """A realistic log; returns the file size after each record (every record is a boundary)."""
    ckpt = await Checkpoint.open(run_dir)
    sizes = []
    try:
        await ckpt.append(Event.RUN_STARTED, None, run="r1", manifest="m.yaml")
        sizes.append(os.path.getsize(run_dir / FILE))
        for i in range(shots):
            sid = f"sc-s{i:02d}"
            for ev, fields in (
                (Event.SHOT_PLANNED, {"fp": f"sha256:{i}", "prov": "local", "model": "previz"}),
                (Event.SUBMIT_INTENT, {"att": 1, "key": f"r1:{sid}:1"}),
                (Event.SUBMITTED, {"job": f"job-{i}", "prov": "local", "model": "previz"}),
                (Event.COMPLETED, {"url": f"https://cdn.example/{i}.mp4?sig=secret"}),
                (Event.FETCHED, {"path": f"shots/{sid}.mp4", "bytes": 100 + i, "sha256": "ab"}),
            ):
                await ckpt.append(ev, sid, **fields)
                sizes.append(os.path.getsize(run_dir / FILE))
    finally:
        await ckpt.close()
    return sizes


async def test_log_is_private_and_replays_to_done(tmp_path: Path) -> None:
    await write_log(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / FILE).st_mode) == 0o600
    loaded = load(tmp_path / FILE, repair=False)
    state = replay(loaded.records)
    assert state.run_id == "r1"
    assert [r.state for r in state.shots.values()] == [ShotState.DONE] * 4
    assert [r.seq for r in loaded.records] == list(range(1, 22))
    assert replay(loaded.records) == state  # deterministic


async def test_torn_tail_at_every_byte_offset_keeps_the_synced_prefix(tmp_path: Path) -> None:
    run = tmp_path / "run"
    sizes = await write_log(run)
    data = (run / FILE).read_bytes()
    full = parse(data).records
    start = sizes[-4]  # every offset inside the last 3 records
    for cut in range(start, len(data)):
        loaded = parse(data[:cut])
        complete = sum(1 for s in sizes if s <= cut)
        assert loaded.records == full[:complete], cut
        assert loaded.good_bytes == sizes[complete - 1]
        assert loaded.tail == data[loaded.good_bytes : cut]


@pytest.mark.parametrize(
    "garbage", [b"\x00" * 300, b"\x00\n" * 5, b'{"v":1,"seq":99}\n', b"\xff\xfe garbage \n\x01"]
)
async def test_garbage_tail_is_moved_aside_and_the_log_continues(
    tmp_path: Path, garbage: bytes
) -> None:
    await write_log(tmp_path, shots=2)
    good = (tmp_path / FILE).read_bytes()
    with (tmp_path / FILE).open("ab") as fh:
        fh.write(garbage)
    ckpt = await Checkpoint.open(tmp_path)
    try:
        assert len(ckpt.records) == 11
        assert ckpt.repaired is not None
        assert ckpt.repaired.read_bytes() == garbage
        await ckpt.append(Event.RUN_FINISHED, None)
    finally:
        await ckpt.close()
    data = (tmp_path / FILE).read_bytes()
    assert data.startswith(good)
    assert [r.seq for r in parse(data).records] == list(range(1, 13))
    assert not parse(data).tail


async def test_corruption_before_good_records_is_refused_with_the_line(tmp_path: Path) -> None:
    await write_log(tmp_path, shots=2)
    lines = (tmp_path / FILE).read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"job-0", b"job-X")  # a flipped byte mid-file: CRC mismatch
    (tmp_path / FILE).write_bytes(b"".join(lines))
    before = (tmp_path / FILE).read_bytes()
    with pytest.raises(CheckpointError, match=r"checkpoint.jsonl:4: corrupt record"):
        await Checkpoint.open(tmp_path)
    assert (tmp_path / FILE).read_bytes() == before  # nothing was changed
    assert not list(tmp_path.glob("*.corrupt-*"))


async def test_random_single_byte_damage_never_yields_a_wrong_record(tmp_path: Path) -> None:
    await write_log(tmp_path, shots=2)
    data = (tmp_path / FILE).read_bytes()
    full = parse(data).records
    rng = random.Random(7)
    for _ in range(300):
        pos = rng.randrange(len(data))
        damaged = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
        try:
            loaded = parse(damaged)
        except CheckpointError:
            continue  # refused loudly: fine
        assert loaded.records == full[: len(loaded.records)]  # only ever a true prefix


async def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    await write_log(tmp_path, shots=1)
    line = (tmp_path / FILE).read_bytes().splitlines(keepends=True)[0]
    newer = line.replace(b'"v":1', b'"v":2')
    # Re-seal with a valid CRC so only the version is wrong.
    import zlib

    body = newer[: -len(b',"crc":"00000000"}\n')] + b"}"
    newer = body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body)
    (tmp_path / FILE).write_bytes(newer)
    with pytest.raises(CheckpointError, match="newer pipeline"):
        await Checkpoint.open(tmp_path)


async def test_second_open_is_locked_out(tmp_path: Path) -> None:
    first = await Checkpoint.open(tmp_path)
    try:
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            await Checkpoint.open(tmp_path)
    finally:
        await first.close()
    second = await Checkpoint.open(tmp_path)  # released on close
    await second.close()


async def test_write_error_is_fail_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = await Checkpoint.open(tmp_path)
    await ckpt.append(Event.RUN_STARTED, None, run="r")
    await ckpt.sync()  # a non-durable event is only promised once synced
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        await ckpt.append(Event.SUBMIT_INTENT, "s", att=1, key="k")
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(CheckpointError, match="not writable"):  # stays stopped
        await ckpt.append(Event.SUBMIT_INTENT, "s", att=1, key="k")
    await ckpt.close()
    assert [r.ev for r in load(tmp_path / FILE, repair=False).records] == [Event.RUN_STARTED]


async def test_short_write_is_a_torn_record_and_fail_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = await Checkpoint.open(tmp_path)
    await ckpt.append(Event.RUN_STARTED, None, run="r")
    await ckpt.sync()  # a non-durable event is only promised once synced
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:10]))
    with pytest.raises(CheckpointError, match="short write"):
        await ckpt.append(Event.SUBMIT_INTENT, "s", att=1, key="k")
    monkeypatch.setattr(os, "write", real_write)
    await ckpt.close()
    again = await Checkpoint.open(tmp_path)  # the next run repairs the tail
    try:
        assert [r.ev for r in again.records] == [Event.RUN_STARTED]
        assert again.repaired is not None
    finally:
        await again.close()


def test_encode_refuses_reserved_fields() -> None:
    from pipeline.journal.checkpoint import Record

    with pytest.raises(ValueError, match="reserved"):
        encode(Record(seq=1, ts="t", ev=Event.STATUS, shot="s", data={"seq": 5}))
