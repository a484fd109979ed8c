"""R16 (replaying the log is deterministic, crash-safe and prefix-closed) and R17 (polling ends).

The torn-tail and corruption cases of R4 are in tests/test_checkpoint.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import FILE, Checkpoint, Record, load, parse
from pipeline.journal.state import replay
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event, ShotState
from pipeline.outputs.summary import status_json
from tests.fakes import FakeService, fake_spec

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
SHOTS = ("a-s1", "a-s2", "a-s3")


def test_r16_golden_checkpoints_replay_to_their_recorded_states() -> None:
    logs = sorted(GOLDEN.glob("*.jsonl"))
    assert logs
    for log in logs:
        expected = json.loads(log.with_suffix(".state.json").read_text())
        state = replay(load(log, repair=False).records)
        assert status_json("golden", state) == expected, log.name


async def _append(path: Path, ev: Event, shot: str | None, fields: dict[str, Any]) -> None:
    ckpt = await Checkpoint.open(path)
    try:
        await ckpt.append(ev, shot, **fields)
    finally:
        await ckpt.close()


class LogMachine(RuleBasedStateMachine):
    """A model of a run's life: submits, lost answers, polls, fetches, crashes, torn tails."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.stage = dict.fromkeys(SHOTS, "new")  # new | intent | submitted | completed | done
        self.attempt = dict.fromkeys(SHOTS, 0)
        self.written = 0  # records the model knows are durable

    def teardown(self) -> None:
        self._tmp.cleanup()

    def _write(self, ev: Event, shot: str | None, **fields: object) -> None:
        anyio.run(_append, self.dir, ev, shot, dict(fields))
        self.written += 1

    def _records(self) -> list[Record]:
        return list(load(self.dir / FILE, repair=False).records)

    @rule(shot=st.sampled_from(SHOTS))
    def plan(self, shot: str) -> None:
        if self.stage[shot] == "new" and self.attempt[shot] == 0:
            self._write(Event.SHOT_PLANNED, shot, fp=f"sha256:{shot}", prov="fake", model="m")

    @rule(shot=st.sampled_from(SHOTS))
    def submit(self, shot: str) -> None:
        if self.stage[shot] == "new":
            self.attempt[shot] += 1
            self._write(Event.SUBMIT_INTENT, shot, att=self.attempt[shot], key=f"r:{shot}")
            self.stage[shot] = "intent"

    @rule(shot=st.sampled_from(SHOTS))
    def respond(self, shot: str) -> None:
        if self.stage[shot] == "intent":
            self._write(Event.SUBMITTED, shot, job=f"job-{shot}-{self.attempt[shot]}")
            self.stage[shot] = "submitted"

    @rule(shot=st.sampled_from(SHOTS))
    def lose_response(self, shot: str) -> None:
        if self.stage[shot] == "intent":
            self._write(Event.SUBMIT_AMBIGUOUS, shot, reason="reset")
            self.stage[shot] = "ambiguous"

    @rule(shot=st.sampled_from(SHOTS), raw=st.sampled_from(["QUEUED", "IN_PROGRESS", "WEIRD"]))
    def poll(self, shot: str, raw: str) -> None:
        if self.stage[shot] == "submitted":
            self._write(Event.STATUS, shot, status="running", raw=raw)

    @rule(shot=st.sampled_from(SHOTS))
    def complete(self, shot: str) -> None:
        if self.stage[shot] == "submitted":
            self._write(Event.COMPLETED, shot, url=f"https://cdn.example/{shot}.mp4?sig=x")
            self.stage[shot] = "completed"

    @rule(shot=st.sampled_from(SHOTS))
    def download(self, shot: str) -> None:
        if self.stage[shot] == "completed":
            self._write(Event.FETCHED, shot, path=f"shots/{shot}.mp4", bytes=10, sha256="ab")
            self.stage[shot] = "done"

    @rule()
    def crash_and_reload(self) -> None:
        before = replay(self._records())
        ckpt = anyio.run(Checkpoint.open, self.dir)  # reopen: lock, load, repair the tail
        anyio.run(ckpt.close)  # a crash releases the lock with the process, as close does
        assert replay(self._records()) == before

    @precondition(lambda self: self.written > 1)
    @rule(data=st.data())
    def truncate_tail(self, data: st.DataObject) -> None:
        path = self.dir / FILE
        raw = path.read_bytes()
        last = raw.rstrip(b"\n").rfind(b"\n") + 1
        cut = data.draw(st.integers(min_value=last, max_value=len(raw) - 1))
        full = parse(raw).records
        path.write_bytes(raw[:cut])
        ckpt = anyio.run(Checkpoint.open, self.dir)
        assert ckpt.records == full[:-1]  # exactly the records before the torn one
        anyio.run(ckpt.close)
        # The model forgets the torn record (it was never acknowledged as durable).
        self._rebuild(full[:-1])

    def _rebuild(self, records: list[Record]) -> None:
        state = replay(records)
        self.written = len(records)
        for shot in SHOTS:
            rec = state.shots.get(shot)
            self.attempt[shot] = rec.attempt if rec else 0
            self.stage[shot] = {
                None: "new",
                ShotState.PENDING: "new",
                ShotState.SUBMITTING: "intent",
                ShotState.POLLING: "submitted",
                ShotState.FETCHING: "completed",
                ShotState.DONE: "done",
                ShotState.NEEDS_RECONCILE: "ambiguous",
            }.get(rec.state if rec else None, "new")

    @invariant()
    def replay_is_deterministic_and_safe(self) -> None:
        if not (self.dir / FILE).exists():
            return
        records = self._records()
        assert len(records) == self.written
        state = replay(records)
        assert replay(records) == state
        submitted: dict[tuple[str, int], int] = {}
        completed: set[str] = set()
        for r in records:
            assert r.shot is not None
            if r.ev == Event.SUBMITTED:
                key = (r.shot, int(state.shots[r.shot].attempt))
                submitted[key] = submitted.get(key, 0) + 1
            if r.ev == Event.COMPLETED:
                completed.add(r.shot)
            if r.ev == Event.FETCHED:
                assert r.shot in completed  # no download before completion
        assert all(n == 1 for n in submitted.values())  # one submitted per (shot, attempt)
        for i in range(len(records) + 1):  # every prefix replays without error
            replay(records[:i])


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


async def test_r17_a_job_stuck_in_an_unknown_status_ends_at_its_deadline(tmp_path: Path) -> None:
    service = FakeService(polls_to_finish=10**9, stuck_raw="SOMETHING_NEW")
    registry = {"fake": fake_spec(service)}
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: stuck\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        "providers:\n  fake: {poll_deadline_s: 0.3}\n"
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: p}\n"
    )
    m = load_manifest(path, registry=registry)
    run_dir = tmp_path / "jobs" / "stuck"
    result = await execute(m, run_dir, RunOptions(registry=registry))
    rec = result.state.shots["a-s1"]
    assert rec.state == ShotState.FAILED
    assert rec.charged == "yes"  # timed out, still charged
    assert "SOMETHING_NEW" in (rec.error or "")
    assert service.calls.count("poll") >= 2  # the unknown status counted as running
    again = await execute(m, run_dir, RunOptions(registry=registry))
    assert again.state.shots["a-s1"].state == ShotState.FAILED
    assert service.ledger == ["a-s1"]  # never resubmitted
