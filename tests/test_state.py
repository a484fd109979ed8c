"""Replay: ``replay(records)``, ``apply`` one by one and the ``folder`` fold give the same state."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline.journal.checkpoint import Record
from pipeline.journal.state import RunState, apply, folder, replay
from pipeline.models import Event, ShotState


def random_records(rng: random.Random, n: int) -> list[Record]:
    """Records of every event, with fields present, missing or changed (a fingerprint edit)."""
    out = []
    for seq in range(1, n + 1):
        ev = rng.choice(list(Event))
        shot = None if ev in (Event.RUN_STARTED, Event.RUN_FINISHED) else rng.choice("abc")
        fields: dict[Event, dict[str, Any]] = {
            Event.RUN_STARTED: {"run": rng.choice(["r1", "r2"]), "manifest": "m.yaml"},
            Event.SHOT_PLANNED: {"fp": rng.choice(["sha256:1", "sha256:2"]), "prov": "venice"},
            Event.UPLOADED: {"asset": rng.choice("xy"), "role": "image", "url": "https://u"},
            Event.SUBMIT_INTENT: {"att": rng.randint(1, 3), "key": "r:a:1", "est_usd": 0.5},
            Event.SUBMITTED: {"job": f"j{seq}", "data": {"download_url": "https://d"}},
            Event.STATUS: {"raw": rng.choice(["RUNNING", "", None])},
            Event.COMPLETED: {"url": "https://v"},
            Event.FETCHED: {"path": "shots/a.mp4", "bytes": 5, "sha256": "ab"},
            Event.FAILED: {"reason": "no", "charged": "no"},
        }
        data = fields.get(ev, {"reason": "why"})
        if rng.random() < 0.2:  # a field missing
            data.pop(rng.choice([*data, "none"]), None)
        out.append(Record(seq, f"2026-11-20T10:00:{seq % 60:02d}.000Z", ev, shot, data))
    return out


def three_ways(records: list[Record]) -> list[Any]:
    """The state (or the exception type) from replay, apply and folder."""
    results: list[Any] = []
    for way in ("replay", "apply", "folder"):
        try:
            if way == "replay":
                state = replay(records)
            else:
                state = RunState()
                fold = folder(state)
                for r in records:
                    if way == "apply":
                        apply(state, r)
                    else:
                        fold(r.seq, r.ts, r.ev, r.shot, r.data)
        except Exception as exc:  # compared below, not hidden
            results.append(type(exc))
        else:
            results.append(state)
    return results


def test_replay_apply_and_folder_agree() -> None:
    rng = random.Random(5)
    states = 0
    for _ in range(400):
        replayed, applied, folded = three_ways(random_records(rng, rng.randint(1, 30)))
        assert replayed == applied == folded
        states += isinstance(replayed, RunState)
    assert states > 300


def test_a_run_event_with_a_shot_is_refused_alike() -> None:
    bad = [Record(1, "2026-11-20T10:00:00.000Z", Event.RUN_STARTED, "a", {})]
    assert three_ways(bad) == [KeyError] * 3


@pytest.mark.parametrize("fp", ["sha256:2", None])
def test_a_changed_or_missing_fingerprint_resets_the_shot(fp: str | None) -> None:
    ts = "2026-11-20T10:00:00.000Z"
    planned = {"fp": "sha256:1", "prov": "venice", "model": "m"}
    records = [
        Record(1, ts, Event.SHOT_PLANNED, "a", planned),
        Record(2, ts, Event.SUBMIT_INTENT, "a", {"att": 1, "key": "k"}),
        Record(3, ts, Event.SUBMITTED, "a", {"job": "j"}),
        Record(4, ts, Event.SHOT_PLANNED, "a", {} if fp is None else {"fp": fp}),
    ]
    for state in three_ways(records):
        rec = state.shots["a"]
        assert (rec.state, rec.job, rec.attempt) == (ShotState.PENDING, None, 1)
        assert (rec.fingerprint, rec.provider) == (fp or "", "")
