"""The state snapshot: snapshot + tail gives the full replay's state, or it is ignored."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.engine.options import EXIT_OK
from pipeline.errors import CheckpointError
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE, Checkpoint, Record, encode, load
from pipeline.journal.snapshot import (
    load_state,
    open_state,
    prefix_into,
    read_snapshot,
    write_snapshot,
)
from pipeline.journal.state import RunState, apply, folder, replay
from pipeline.models import Event
from tests.fakes import FakeService
from tests.test_runner import run, run_dir_of, write_manifest

ROOT = Path(__file__).resolve().parent.parent


def _fields(rng: random.Random, ev: Event, seq: int) -> dict[str, Any]:
    """Fields of every kind a state keeps: floats, ints, None, empty strings, media, job data."""
    num = rng.choice([None, 0, 1, 0.1 + 0.2, 1e-300, 12.5, 3])
    by_event: dict[Event, dict[str, Any]] = {
        Event.RUN_STARTED: {"run": rng.choice(["r1", "r2"]), "manifest": rng.choice(["m", ""])},
        Event.SHOT_PLANNED: {
            "fp": rng.choice(["sha256:1", "sha256:2", ""]),
            "prov": rng.choice(["venice", "fake"]),
            "model": rng.choice(["m1", ""]),
        },
        Event.UPLOADED: {
            "asset": rng.choice(["x", "y", "sha256:ü"]),
            "role": rng.choice(["image", "end_image", "reference_video"]),
            "url": rng.choice(["https://u", "data:image/png;base64,AA=="]),
            "sha256": rng.choice([None, "ab"]),
            "mime": rng.choice([None, "image/png"]),
            "expires_at": rng.choice([None, 1795428000.25, 1795428000]),
        },
        Event.SUBMIT_INTENT: {"att": rng.randint(1, 3), "key": f"r:a:{seq}", "est_usd": num},
        Event.SUBMITTED: {
            "job": f"j{seq}",
            "prov": "venice",
            "data": rng.choice([None, {}, {"download_url": "https://d/once?sig=1"}]),
            "cost_usd": num,
            "credits": rng.choice([None, 7, 0.5]),
        },
        Event.STATUS: {"raw": rng.choice(["RUNNING", "", None]), "status": "running"},
        Event.COMPLETED: {"url": rng.choice(["https://v", None])},
        Event.FETCHED: {"path": "shots/a.mp4", "bytes": rng.choice([5, 0]), "sha256": "ab"},
        Event.FAILED: {"reason": "no", "charged": rng.choice(["no", "yes", None])},
    }
    data = by_event.get(ev, {"reason": rng.choice(["why", "", None])})
    if rng.random() < 0.2:  # a field missing
        data.pop(rng.choice([*data, "none"]), None)
    return {k: v for k, v in data.items() if v is not None or rng.random() < 0.5}


def random_log(rng: random.Random, n: int) -> list[Record]:
    """``n`` records a writer could produce (every one replays without an error)."""
    state = RunState()
    out: list[Record] = []
    seq = 0
    while len(out) < n:
        ev = rng.choice(list(Event))
        shot = None if ev in (Event.RUN_STARTED, Event.RUN_FINISHED) else rng.choice("abcd")
        seq += rng.choice([1, 1, 1, 2])  # seq only has to increase
        ts = f"2026-11-20T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000:03d}Z"
        record = Record(seq, ts, ev, shot, _fields(rng, ev, seq))
        try:
            apply(state, record)
        except (KeyError, ValueError, TypeError):
            continue
        out.append(record)
    return out


def write_log(run_dir: Path, records: list[Record]) -> list[int]:
    """Write ``records`` as ``run_dir``'s log; returns the byte offset after each line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [encode(r) for r in records]
    (run_dir / FILE).write_bytes(b"".join(lines))
    ends, pos = [], 0
    for line in lines:
        pos += len(line)
        ends.append(pos)
    return ends


def snap_at(run_dir: Path, records: list[Record], ends: list[int], k: int) -> None:
    """The snapshot after the first ``k`` records (the replay of exactly those)."""
    offset = ends[k - 1] if k else 0
    last_seq = records[k - 1].seq if k else 0
    write_snapshot(run_dir, replay(records[:k]), offset=offset, last_seq=last_seq)


def used(run_dir: Path) -> int | None:
    """The offset the snapshot would be used from, or None when it would be ignored."""
    with (run_dir / FILE).open("rb") as fh:
        try:
            return read_snapshot(run_dir / snapshot.FILE, fh)[1].offset
        except ValueError:
            return None


def test_snapshot_plus_tail_equals_the_full_replay_at_every_record_boundary(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    for case in range(12):
        run_dir = tmp_path / f"run{case}"
        records = random_log(rng, rng.randint(1, 30))
        ends = write_log(run_dir, records)
        full = replay(records)
        assert load_state(run_dir / FILE) == full  # no snapshot yet
        for k in range(len(records) + 1):
            snap_at(run_dir, records, ends, k)
            with (run_dir / FILE).open("rb") as fh:
                state, prefix = read_snapshot(run_dir / snapshot.FILE, fh)
            # The exact round trip: repr also tells 1 from 1.0 or True, and an enum from its str.
            assert repr(state) == repr(replay(records[:k]))
            assert prefix.offset == (ends[k - 1] if k else 0)
            assert prefix.lines == k
            got, loaded = open_state(run_dir / FILE)
            assert repr(got) == repr(full)
            assert list(got.shots) == list(full.shots)  # the order too (status lists it)
            assert (loaded.good_bytes, loaded.last_seq) == (ends[-1], records[-1].seq)


async def test_checkpoint_open_starts_from_the_snapshot_and_appends_after_it(
    tmp_path: Path,
) -> None:
    records = random_log(random.Random(3), 30)
    ends = write_log(tmp_path, records)
    snap_at(tmp_path, records, ends, 20)
    state = RunState()
    ckpt = await Checkpoint.open(
        tmp_path, fold=folder(state), prefix=prefix_into(state, tmp_path / FILE)
    )
    try:
        assert state == replay(records)
        assert ckpt.position == (ends[-1], records[-1].seq)
        record = await ckpt.append(Event.RUN_FINISHED, None)
        assert record.seq == records[-1].seq + 1
        assert ckpt.position == ((tmp_path / FILE).stat().st_size, record.seq)
        ckpt.append_many([(Event.STATUS, "a", {"raw": "x"})])
        with pytest.raises(CheckpointError, match="still being written"):
            _ = ckpt.position
    finally:
        await ckpt.close()
    assert load_state(tmp_path / FILE) == replay(load(tmp_path / FILE, repair=False).records)


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, list[Record], list[int]]:
    """A log of 30 records with a valid snapshot after the first 20."""
    records = random_log(random.Random(7), 30)
    ends = write_log(tmp_path, records)
    snap_at(tmp_path, records, ends, 20)
    assert used(tmp_path) == ends[19]
    return tmp_path, records, ends


def ignored(run_dir: Path, caplog: pytest.LogCaptureFixture) -> RunState:
    """The state read, asserting the snapshot was ignored (and said so at debug level)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        state = load_state(run_dir / FILE)
    assert "ignoring the snapshot" in caplog.text
    return state


def test_a_log_with_other_bytes_in_the_prefix_ignores_the_snapshot(
    logged: tuple[Path, list[Record], list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, records, _ = logged
    # Same length, still valid lines, different content: a rewritten log.
    changed = [*records]
    r = changed[4]
    changed[4] = Record(r.seq, r.ts.replace("2026", "2027"), r.ev, r.shot, r.data)
    write_log(run_dir, changed)
    assert (run_dir / FILE).stat().st_size == sum(len(encode(x)) for x in records)
    assert ignored(run_dir, caplog) == replay(changed)


def test_a_log_shorter_than_the_snapshot_ignores_it(
    logged: tuple[Path, list[Record], list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, records, ends = logged
    os.truncate(run_dir / FILE, ends[14])
    assert ignored(run_dir, caplog) == replay(records[:15])


@pytest.mark.parametrize(
    "damage",
    ["garbage", "empty", "header only", "body byte", "header byte", "version", "layout", "crc"],
)
def test_a_damaged_or_foreign_snapshot_is_ignored(
    logged: tuple[Path, list[Record], list[int]], caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    run_dir, records, _ = logged
    path = run_dir / snapshot.FILE
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    header = orjson.loads(head)
    if damage == "garbage":
        data = bytes(random.Random(1).randrange(256) for _ in range(500))
    elif damage == "empty":
        data = b""
    elif damage == "header only":
        data = head + b"\n"
    elif damage == "body byte":
        i = body.index(b'"', 10)
        data = head + b"\n" + body[:i] + b"'" + body[i + 1 :]
    elif damage == "header byte":
        data = head[:-3] + b"\n" + body
    elif damage == "version":
        data = orjson.dumps({**header, "v": 2}) + b"\n" + body
    elif damage == "layout":
        fields = {**header["fields"], "shot": header["fields"]["shot"][::-1]}
        data = orjson.dumps({**header, "fields": fields}) + b"\n" + body
    elif damage == "crc":
        data = orjson.dumps({**header, "log_crc": "zzzzzzzz"}) + b"\n" + body
    path.write_bytes(data)
    assert ignored(run_dir, caplog) == replay(records)


def test_an_unreadable_snapshot_is_ignored(
    logged: tuple[Path, list[Record], list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, records, _ = logged
    (run_dir / snapshot.FILE).unlink()
    (run_dir / snapshot.FILE).mkdir()  # exists, but reading it fails
    assert ignored(run_dir, caplog) == replay(records)


async def test_a_torn_tail_after_the_snapshot_is_repaired_as_without_it(
    logged: tuple[Path, list[Record], list[int]],
) -> None:
    run_dir, records, ends = logged
    torn = encode(Record(records[-1].seq + 1, records[-1].ts, Event.STATUS, "a", {"raw": "x"}))
    with (run_dir / FILE).open("ab") as fh:
        fh.write(torn[:-7])
    assert used(run_dir) == ends[19]
    assert load_state(run_dir / FILE) == replay(records)  # read-only: the tail is ignored
    state = RunState()
    hook = prefix_into(state, run_dir / FILE)
    ckpt = await Checkpoint.open(run_dir, fold=folder(state), prefix=hook)
    try:
        assert ckpt.repaired is not None
        assert ckpt.repaired.read_bytes() == torn[:-7]
        assert state == replay(records)
    finally:
        await ckpt.close()
    assert (run_dir / FILE).stat().st_size == ends[-1]


def test_a_corrupt_line_inside_the_prefix_refuses_with_its_line_number(
    logged: tuple[Path, list[Record], list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, _, ends = logged
    data = bytearray((run_dir / FILE).read_bytes())
    data[ends[1] + 5] ^= 0x01  # line 3: the prefix CRC no longer matches: a full replay
    (run_dir / FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{FILE}:3: corrupt record"):
        ignored(run_dir, caplog)


def test_a_corrupt_line_after_the_prefix_refuses_with_the_same_line_number(
    logged: tuple[Path, list[Record], list[int]],
) -> None:
    run_dir, _, ends = logged
    data = bytearray((run_dir / FILE).read_bytes())
    data[ends[23] + 5] ^= 0x01  # line 25, after the snapshot's 20 lines
    (run_dir / FILE).write_bytes(bytes(data))
    assert used(run_dir) == ends[19]
    with pytest.raises(CheckpointError, match=rf"{FILE}:25: corrupt record"):
        load_state(run_dir / FILE)
    (run_dir / snapshot.FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"{FILE}:25: corrupt record"):
        load_state(run_dir / FILE)


def status_json(run_dir: Path) -> tuple[int, str]:
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(run_dir), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not res.stderr
    return res.returncode, res.stdout


async def test_a_run_writes_the_snapshot_and_status_is_the_same_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "MIN_RECORDS", 10)
    path = write_manifest(tmp_path, 4)
    service = FakeService()
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    run_dir = run_dir_of(path)
    snap = run_dir / snapshot.FILE
    assert oct(snap.stat().st_mode & 0o777) == "0o600"
    assert used(run_dir) == (run_dir / FILE).stat().st_size  # covers the whole log
    full = replay(load(run_dir / FILE, repair=False).records)
    assert load_state(run_dir / FILE) == full == result.state
    # A second run (resume) starts from it and appends after it.
    again = await run(path, service)
    assert again.exit_code == EXIT_OK
    assert again.state == replay(load(run_dir / FILE, repair=False).records)
    with_snapshot = status_json(run_dir)
    snap.unlink()
    assert status_json(run_dir) == with_snapshot
    assert '"done"' in with_snapshot[1]


async def test_a_small_log_gets_no_snapshot(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 2)
    assert (await run(path, FakeService())).exit_code == EXIT_OK
    assert not (run_dir_of(path) / snapshot.FILE).exists()


async def test_a_failure_to_write_the_snapshot_is_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: object, **kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "MIN_RECORDS", 0)
    monkeypatch.setattr(snapshot, "write_snapshot", fail)
    path = write_manifest(tmp_path, 2)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert (await run(path, FakeService())).exit_code == EXIT_OK
    assert "could not write the state snapshot" in caplog.text
    assert not (run_dir_of(path) / snapshot.FILE).exists()
