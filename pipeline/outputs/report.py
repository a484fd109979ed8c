"""``report.json``: what every shot did and cost, for producers and scripts (issue 6).

One object per shot id, in manifest order::

    {"run": "harbor-dawn", "simulated": false, "generated": "2026-11-23T10:00:00Z",
     "totals": {"shots": 14, "done": 14, "estimated_usd": 0.0, "actual_usd": 0.0,
                "unknown_cost": 0, "credits": 0},
     "shots": {"dawn-s01": {"state": "done", "provider": "local", "model": "previz",
               "job_id": "loc-…", "output": "shots/dawn-s01.mp4", "sha256": "…",
               "seconds_waited": 4.2, "polls": 3, "retries": 0, "attempts": 1,
               "estimated_usd": null, "actual_usd": null, "credits": null, "error": null,
               "picked": false, "rejected": false, "notes": [], "reroll_of": null}},
     "picks": {"dawn-s02": 2}}

``seconds_waited`` runs from the submit intent to the verified video (or the last event);
``polls`` counts recorded status changes; ``retries`` counts submits that provably did not leave.
Costs: ``estimated_usd`` is the quote or price known at submit; ``actual_usd`` what the shot
cost in the end (0.0 when the provider refunded a failure, None when unknown). Review: ``picks``
maps each shot (``<scene>-<shot>``) to its chosen take; per take, ``picked``, ``rejected``, the
reviewers' ``notes`` (``{"ts", "text"}``) and, for a re-rolled take, the shot it re-rolls
(``reroll_of``). No URL or secret is written here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline._util.fsutil import replacing
from pipeline._util.redaction import redact
from pipeline.journal.checkpoint import Record, ts_epoch
from pipeline.journal.state import RunState, ShotRecord
from pipeline.models import Event, ShotState

REPORT = "report.json"


@dataclass
class _Timing:
    first_intent: float | None = None
    last_event: float | None = None
    polls: int = 0
    not_sent: int = 0


def _timings(records: Iterable[Record]) -> dict[str, _Timing]:
    out: dict[str, _Timing] = {}
    for r in records:
        if r.shot is None:
            continue
        t = out.setdefault(r.shot, _Timing())
        when = ts_epoch(r.ts)
        if r.ev == Event.SHOT_PLANNED and t.first_intent is not None:
            out[r.shot] = t = _Timing()  # an edited shot starts over
        if r.ev == Event.SUBMIT_INTENT and t.first_intent is None:
            t.first_intent = when
        if r.ev == Event.STATUS:
            t.polls += 1
        if r.ev == Event.SUBMIT_NOT_SENT:
            t.not_sent += 1
        t.last_event = when
    return out


def actual_cost(rec: ShotRecord) -> float | None:
    """What the shot cost: 0.0 if nothing was charged or it was refunded, None if unknown."""
    if rec.job is None and rec.state != ShotState.NEEDS_RECONCILE:
        return 0.0
    if rec.state == ShotState.FAILED and rec.charged == "no":
        return 0.0
    return rec.cost_usd if rec.cost_usd is not None else rec.est_usd


def shot_report(rec: ShotRecord, timing: _Timing | None) -> dict[str, Any]:
    """The report entry of one shot (see the module docstring)."""
    waited = None
    if timing and timing.first_intent is not None and timing.last_event is not None:
        waited = round(timing.last_event - timing.first_intent, 3)
    return {
        "state": rec.state.value,
        "provider": rec.provider,
        "model": rec.model,
        "job_id": rec.job.job_id if rec.job else None,
        "output": rec.output,
        "sha256": rec.sha256,
        "bytes": rec.size,
        "seconds_waited": waited,
        "polls": timing.polls if timing else 0,
        "retries": timing.not_sent if timing else 0,
        "attempts": rec.attempt,
        "estimated_usd": rec.est_usd if rec.est_usd is not None else rec.cost_usd,
        "actual_usd": actual_cost(rec),
        "credits": rec.credits,
        "error": redact(rec.error) if rec.error else None,
    }


def picked_ids(picks: Mapping[str, int], ids: Mapping[str, object] | set[str]) -> set[str]:
    """The ids of the picked takes among ``ids`` (shot ids: ``key-tN``, or ``key`` for take 1).

    A shot that had one take and was re-rolled has ``key`` as its take 1 and ``key-t2``...
    """
    out = set()
    for key, take in picks.items():
        sid = f"{key}-t{take}"
        if sid in ids:
            out.add(sid)
        elif take == 1 and key in ids:
            out.add(key)
    return out


def _review(state: RunState, sid: str, picked: set[str]) -> dict[str, Any]:
    verdict = state.review.get(sid, {})
    reroll = state.rerolls.get(sid)
    return {
        "picked": sid in picked,
        "rejected": bool(verdict.get("rejected")),
        "notes": [{"ts": n["ts"], "text": n["text"]} for n in verdict.get("notes", [])],
        "reroll_of": reroll["key"] if reroll else None,
    }


def build_report(
    run_name: str,
    state: RunState,
    records: Sequence[Record],
    order: Sequence[str],
    *,
    picks: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The whole report object for ``state`` (shots in ``order``, unknown ids last).

    ``picks`` are the picks in effect (:func:`pipeline.outputs.picks.read_picks`); default:
    the checkpoint's.
    """
    timings = _timings(records)
    ids = [i for i in order if i in state.shots] + [i for i in state.shots if i not in order]
    if picks is None:
        picks = {k: v for k, v in state.picks.items() if v > 0}
    picked = picked_ids(picks, state.shots)
    shots = {
        sid: shot_report(state.shots[sid], timings.get(sid)) | _review(state, sid, picked)
        for sid in ids
    }
    actual = [s["actual_usd"] for s in shots.values()]
    estimated = [s["estimated_usd"] for s in shots.values() if s["estimated_usd"] is not None]
    totals = {
        "shots": len(shots),
        "done": sum(1 for s in shots.values() if s["state"] == "done"),
        "estimated_usd": round(sum(estimated), 6),
        "actual_usd": round(sum(a for a in actual if a is not None), 6),
        "unknown_cost": sum(1 for a in actual if a is None),
        "credits": sum(s["credits"] or 0 for s in shots.values()),
    }
    generated = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "run": run_name,
        "simulated": bool(state.simulated),
        "generated": generated,
        "totals": totals,
        "shots": shots,
        "picks": dict(picks),
    }


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON to ``path`` via a temporary file and a rename."""
    with replacing(path, mode=0o644, suffix="") as tmp:  # 0644: the page links it
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def write_report(
    run_dir: Path,
    state: RunState,
    records: Sequence[Record],
    order: Sequence[str],
    *,
    picks: Mapping[str, int] | None = None,
) -> Path:
    """Write ``RUN_DIR/report.json`` atomically; returns its path (``picks``: as above)."""
    path = run_dir / REPORT
    write_json_atomic(path, build_report(run_dir.name, state, records, order, picks=picks))
    return path
