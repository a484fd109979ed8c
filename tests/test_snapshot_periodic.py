"""Snapshots taken during a run (journal.snapshotter): a kill leaves one of a recent prefix, and
loading from it gives exactly the full replay's state; one taken while appends go on is the state
of its own prefix; a damaged, partial or half-written one is ignored. No timing thresholds: the
tests wait for what they need to see (with a guard against hanging), never for a duration."""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import anyio
import orjson
import pytest

from pipeline.engine.options import EXIT_OK
from pipeline.errors import CheckpointError
from pipeline.journal import snapformat, snapshot, snapshotter
from pipeline.journal.checkpoint import FILE, Checkpoint, Record, load
from pipeline.journal.snapshot import load_state, open_state, prefix_into, read_snapshot
from pipeline.journal.snapshotter import Policy, Shadow, Snapshotter
from pipeline.journal.state import RunState, ShotRecord, folder, replay
from tests.fakes import FakeService
from tests.test_runner import run, run_dir_of, write_manifest
from tests.test_snapshot import random_log, used, write_log

ROOT = Path(__file__).resolve().parent.parent
#: Snapshot as often as possible: every 20 records, no interval, the log looked at every 5 ms.
EAGER = Policy(min_growth=20, growth=0.1, min_interval_s=0.0, check_s=0.005)
GUARD_S = 120.0  # only against a hang: nothing here depends on how long anything takes


def assert_same(got: RunState, want: RunState) -> None:
    """Field by field, in order, with repr (1 is not 1.0, an enum is not its value)."""
    assert list(got.shots) == list(want.shots)
    for name in snapformat.RUN:
        assert repr(getattr(got, name)) == repr(getattr(want, name)), name
    for sid, rec in want.shots.items():
        for f in fields(ShotRecord):
            assert repr(getattr(got.shots[sid], f.name)) == repr(getattr(rec, f.name)), (sid, f)
    assert got == want


def full_replay(run_dir: Path) -> RunState:
    return replay(load(run_dir / FILE, repair=False).records)


def header(run_dir: Path) -> dict[str, int] | None:
    try:
        with (run_dir / snapshot.FILE).open("rb") as fh:
            return dict(snapformat.parse_header(fh.readline()))
    except (OSError, ValueError):
        return None


def spread(records: list[Record]) -> list[Record]:
    """The same log over more shots: a new one every 40 records (new shots all along)."""
    return [
        r if r.shot is None else Record(r.seq, r.ts, r.ev, f"{r.shot}{r.seq // 40}", r.data)
        for r in records
    ]


async def append_all(ckpt: Checkpoint, records: list[Record]) -> None:
    for r in records:
        await ckpt.append(r.ev, r.shot, **r.data)
    await ckpt.sync()


async def wait_until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(GUARD_S):
        while True:
            if cond():
                return
            await anyio.sleep(0.005)


# A run-like writer: the checkpoint's own appends, the periodic snapshots, until it is killed.
CHILD = """
import random, sys
from pathlib import Path
import anyio
from pipeline.journal import snapshotter
from pipeline.journal.checkpoint import Checkpoint
from tests.test_snapshot import random_log

async def main() -> None:
    records = random_log(random.Random(int(sys.argv[2])), 10_000)
    ckpt = await Checkpoint.open(Path(sys.argv[1]))
    policy = snapshotter.Policy(min_growth=20, min_interval_s=0.0, check_s=0.005)
    async with snapshotter.periodic(ckpt, policy):
        for n, r in enumerate(records):
            await ckpt.append(r.ev, r.shot, **r.data)
            if n % 50 == 0:
                await anyio.sleep(0)
        await anyio.sleep_forever()

anyio.run(main)
"""


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_kill_9_leaves_a_recent_snapshot_and_loading_from_it_is_the_full_replay(
    tmp_path: Path, seed: int
) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-c", CHILD, str(run_dir), str(seed)]
    proc = await anyio.open_process(cmd, cwd=ROOT, stdout=None, stderr=None)
    try:
        # Killed once a snapshot covers 2,000 records, while it keeps appending and snapshotting.
        await wait_until(lambda: (header(run_dir) or {}).get("seq", 0) >= 2000)
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(GUARD_S):
            await proc.wait()
    want = full_replay(run_dir)
    assert used(run_dir) is not None  # the snapshot is usable: it matches the log's first bytes
    last = header(run_dir)
    assert last is not None
    assert last["seq"] >= 2000
    records = load(run_dir / FILE, repair=False).records
    with (run_dir / FILE).open("rb") as fh:
        snap, prefix = read_snapshot(run_dir / snapshot.FILE, fh)
    assert_same(snap, replay(records[: prefix.lines]))  # exactly the state of its prefix
    got, loaded = open_state(run_dir / FILE)  # `status`: the snapshot, then the tail
    assert_same(got, want)
    assert loaded.last_seq == records[-1].seq
    state = RunState()  # `resume`: the same through the writer's open (lock, tail repair)
    ckpt = await Checkpoint.open(
        run_dir, fold=folder(state), prefix=prefix_into(state, run_dir / FILE)
    )
    await ckpt.close()
    assert_same(state, want)


async def test_a_snapshot_written_while_appends_go_on_is_the_state_of_its_own_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = spread(random_log(random.Random(5), 900))
    real = snapshot.write_encoded
    writing, go = threading.Event(), threading.Event()
    firsts: list[bytes] = []  # the first snapshot as installed (a later one may replace it)

    def held(run_dir: Path, enc: snapshot.Encoded, between: Callable[[], None]) -> Path:
        def between_lines() -> None:  # the first snapshot waits half-written for more appends
            if not writing.is_set():
                writing.set()
                go.wait(GUARD_S)
            between()

        path = real(run_dir, enc, between_lines)
        if not firsts:
            firsts.append(path.read_bytes())
        return path

    monkeypatch.setattr(snapshot, "write_encoded", held)
    ckpt = await Checkpoint.open(tmp_path)
    try:
        async with snapshotter.periodic(ckpt, EAGER) as writer:
            await append_all(ckpt, records[:300])
            await wait_until(writing.is_set)
            await append_all(ckpt, records[300:])  # while the snapshot is being written
            before = (tmp_path / FILE).stat().st_size
            go.set()
            await wait_until(lambda: writer.written >= 1)
            first = firsts[0]
    finally:
        await ckpt.close()
    written = load(tmp_path / FILE, repair=False).records
    (tmp_path / "first.snapshot").write_bytes(first)
    with (tmp_path / FILE).open("rb") as fh:
        snap, prefix = read_snapshot(tmp_path / "first.snapshot", fh)
    assert 0 < prefix.offset < before  # it covers the prefix it had folded, no more
    assert prefix.seq == written[prefix.lines - 1].seq
    assert_same(snap, replay(written[: prefix.lines]))
    assert_same(open_state(tmp_path / FILE)[0], full_replay(tmp_path))


async def test_a_run_stopped_mid_way_resumes_from_its_periodic_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshotter, "POLICY", Policy(1, 0.0, 0.0, 0.005))
    service = FakeService(polls_to_finish=10**9)  # the first jobs never finish: no end of run
    path = write_manifest(tmp_path, 100)
    run_dir = run_dir_of(path)
    async with anyio.create_task_group() as tg:  # a "kill": no end of run, no after_run
        tg.start_soon(run, path, service)
        # run_started, 100 shot_planned, then submits: a snapshot with jobs in flight
        await wait_until(lambda: (header(run_dir) or {}).get("seq", 0) >= 105)
        tg.cancel_scope.cancel()
    assert used(run_dir) is not None
    want = full_replay(run_dir)
    assert not want.finished
    assert_same(open_state(run_dir / FILE)[0], want)
    service.polls_to_finish = 1
    for job in service.jobs.values():
        job.polls_left = 1
    result = await run(path, service)  # resume: starts from that snapshot
    assert result.exit_code == EXIT_OK
    assert_same(result.state, full_replay(run_dir))


def test_the_shadow_brought_forward_in_steps_is_the_replay_of_each_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshotter, "_HELD", 2)  # shots encoded back to rows all the time
    monkeypatch.setattr(snapshotter, "_READ", 333)  # lines split across reads
    rng = random.Random(9)
    records = spread(random_log(rng, 400))
    ends = write_log(tmp_path, records)
    data = (tmp_path / FILE).read_bytes()
    pace = snapshotter._Pacer(Policy(), threading.Event())
    shadow = Shadow.start(tmp_path, pace)
    for cut in [*sorted(rng.sample(range(1, len(data)), 12)), len(data)]:
        (tmp_path / FILE).write_bytes(data[:cut])  # the log as a reader sees it while it grows
        shadow.advance()
        k = sum(1 for e in ends if e <= cut)  # complete lines only
        assert (shadow.enc.offset, shadow.enc.lines) == ((ends[k - 1] if k else 0), k)
        shadow.write()
        with (tmp_path / FILE).open("rb") as fh:
            snap, _ = read_snapshot(tmp_path / snapshot.FILE, fh)
        assert_same(snap, replay(records[:k]))
        again = Shadow.start(tmp_path, pace)  # and read back as rows, as a next run would
        assert again.enc == shadow.enc


def test_shot_ids_that_json_escapes_are_folded_like_any_other(tmp_path: Path) -> None:
    odd = {"a": 'q"uo\\te', "b": "\u00e9t\u00e9-\u2603", "c": "tab\there", "d": "/sl\\/"}
    records = [
        r if r.shot is None else Record(r.seq, r.ts, r.ev, odd[r.shot] + str(r.seq // 50), r.data)
        for r in random_log(random.Random(12), 300)
    ]
    ends = write_log(tmp_path, records)
    pace = snapshotter._Pacer(Policy(), threading.Event())
    shadow = Shadow.start(tmp_path, pace)
    data = (tmp_path / FILE).read_bytes()
    for k in (100, 200, 300):
        (tmp_path / FILE).write_bytes(data[: ends[k - 1]])
        shadow.advance()
        shadow.write()
        with (tmp_path / FILE).open("rb") as fh:
            assert_same(read_snapshot(tmp_path / snapshot.FILE, fh)[0], replay(records[:k]))


def test_a_record_spelled_otherwise_is_never_folded_from_scratch(tmp_path: Path) -> None:
    records = random_log(random.Random(13), 100)
    write_log(tmp_path, records)
    pace = snapshotter._Pacer(Policy(), threading.Event())
    shadow = Shadow.start(tmp_path, pace)
    shadow.advance()
    shot = next(r.shot for r in records if r.shot is not None)
    # A line the reader accepts (its CRC is right) in a spelling no writer uses.
    body = orjson.dumps(
        {"ev": "status", "raw": "x", "seq": records[-1].seq + 1, "shot": "@", "ts": "t", "v": 1},
        option=orjson.OPT_SORT_KEYS,
    ).replace(b'"shot":"@"', b'"shot": ' + orjson.dumps(shot))
    with (tmp_path / FILE).open("ab") as fh:
        fh.write(body[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body))
    assert_same(load_state(tmp_path / FILE), full_replay(tmp_path))  # the reader takes it
    with pytest.raises(CheckpointError, match="not spelled as written"):
        shadow.advance()  # rather than a fresh record for a shot it knows


@pytest.mark.parametrize("cut", ["header", "mid-header", "body-line", "mid-body", "last-byte"])
async def test_a_partial_snapshot_is_ignored_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    monkeypatch.setattr(snapformat, "PER_LINE", 3)  # a body of several lines
    records = spread(random_log(random.Random(4), 300))
    ends = write_log(tmp_path, records)
    state = replay(records[:200])
    snapshot.write_snapshot(tmp_path, state, offset=ends[199], last_seq=records[199].seq)
    data = (tmp_path / snapshot.FILE).read_bytes()
    head = data.index(b"\n") + 1
    at = {
        "header": head,
        "mid-header": head // 2,
        "body-line": data.index(b"\n", head) + 1,
        "mid-body": (head + len(data)) // 2,
        "last-byte": len(data) - 1,
    }[cut]
    (tmp_path / snapshot.FILE).write_bytes(data[:at])
    # What a kill during a write leaves beside it: the temporary file, never read.
    (tmp_path / f".{snapshot.FILE}.x1y2.tmp").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        assert_same(open_state(tmp_path / FILE)[0], replay(records))
    assert "ignoring the snapshot" in caplog.text
    ckpt = await Checkpoint.open(tmp_path)
    try:  # the next run: the partial file is not used to start from, the leftover goes
        async with snapshotter.periodic(ckpt, EAGER) as writer:
            await wait_until(lambda: writer.written >= 1)
    finally:
        await ckpt.close()
    assert not list(tmp_path.glob(".*.tmp"))
    assert used(tmp_path) == ends[-1]
    assert_same(open_state(tmp_path / FILE)[0], replay(records))


async def test_a_failure_to_write_is_a_warning_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = snapshot.write_encoded
    calls: list[int] = []

    def flaky(run_dir: Path, enc: snapshot.Encoded, between: Callable[[], None]) -> Path:
        calls.append(enc.offset)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(run_dir, enc, between)

    monkeypatch.setattr(snapshot, "write_encoded", flaky)
    records = random_log(random.Random(6), 100)
    ckpt = await Checkpoint.open(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            async with snapshotter.periodic(ckpt, EAGER) as writer:
                await append_all(ckpt, records)
                await wait_until(lambda: writer.written >= 1)
    finally:
        await ckpt.close()
    assert "could not write a state snapshot" in caplog.text
    assert len(calls) >= 2
    assert used(tmp_path) is not None
    assert_same(open_state(tmp_path / FILE)[0], full_replay(tmp_path))


async def test_a_log_it_cannot_fold_stops_the_snapshots_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = random_log(random.Random(8), 60)
    write_log(tmp_path, records)
    with (tmp_path / FILE).open("ab") as fh:  # a complete line no writer produces
        fh.write(b'{"v":1,"seq":1}\n')
    writer = Snapshotter(tmp_path, EAGER)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        writer.start()
        with anyio.fail_after(GUARD_S):
            await anyio.to_thread.run_sync(writer._thread.join)
    assert "periodic state snapshots" in caplog.text
    assert writer.written == 0
    assert not (tmp_path / snapshot.FILE).exists()


async def test_stopping_gives_up_a_snapshot_under_way_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = spread(random_log(random.Random(2), 200))
    ends = write_log(tmp_path, records)
    snapshot.write_snapshot(
        tmp_path, replay(records[:50]), offset=ends[49], last_seq=records[49].seq
    )
    old = (tmp_path / snapshot.FILE).read_bytes()
    real = snapshot.write_encoded
    writer = Snapshotter(tmp_path, EAGER)
    writing = threading.Event()

    def held(run_dir: Path, enc: snapshot.Encoded, between: Callable[[], None]) -> Path:
        def between_lines() -> None:  # half-written when stop() is called
            writing.set()
            writer._stop.wait(GUARD_S)
            between()  # then raises: stop was asked

        return real(run_dir, enc, between_lines)

    monkeypatch.setattr(snapshot, "write_encoded", held)
    writer.start()
    await wait_until(writing.is_set)
    await anyio.to_thread.run_sync(writer.stop)
    assert not writer._thread.is_alive()
    assert writer.written == 0
    assert (tmp_path / snapshot.FILE).read_bytes() == old
    assert not list(tmp_path.glob(".*.tmp"))
    assert_same(open_state(tmp_path / FILE)[0], replay(records))
