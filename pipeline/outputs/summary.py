"""Human and machine views of a run's state: the end-of-run table and ``status --json``.

One-time URLs and presigned query strings never appear here: only ids, states, paths and errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline._util.redaction import redact
from pipeline._util.table import text_table
from pipeline.journal.state import RunState, ShotRecord, counts
from pipeline.models import ShotState
from pipeline.outputs.report import picked_ids

_ATTENTION = (ShotState.FAILED, ShotState.NEEDS_RECONCILE)


def status_json(
    run_name: str,
    state: RunState,
    order: Sequence[str] | None = None,
    *,
    picks: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``status --json`` object.

    Args:
        run_name: the run directory's name.
        state: the replayed checkpoint.
        order: shot ids in display order (default: first appearance).
        picks: the picks in effect (:func:`pipeline.outputs.picks.read_picks`, which adds an
            old run's ``picks.json``); default: the checkpoint's.

    Returns:
        ``{"run": str, "simulated": bool, "counts": {state: n}, "picks": {shot: take},
        "shots": [{"id", "state", "provider", "model", "job_id", "output", "error", "held",
        "picked", "rejected", "notes"}]}``; ``simulated`` is True for a ``--simulate``
        rehearsal; ``notes`` are the reviewers' texts, oldest first.
    """
    ids = list(order) if order is not None else list(state.shots)
    if picks is None:
        picks = {k: v for k, v in state.picks.items() if v > 0}
    picked = picked_ids(picks, state.shots)
    shots = [_shot_json(state, state.shots[i], picked) for i in ids if i in state.shots]
    return {
        "run": run_name,
        "simulated": bool(state.simulated),
        "counts": counts(state),
        "picks": dict(picks),
        "shots": shots,
    }


def _shot_json(state: RunState, rec: ShotRecord, picked: set[str]) -> dict[str, Any]:
    verdict = state.review.get(rec.id, {})
    return {
        "id": rec.id,
        "state": rec.state.value,
        "provider": rec.provider,
        "model": rec.model,
        "job_id": rec.job.job_id if rec.job else None,
        "output": rec.output,
        "error": redact(rec.error) if rec.error else None,
        "held": rec.held if _waiting(rec) else None,
        "picked": rec.id in picked,
        "rejected": bool(verdict.get("rejected")),
        "notes": [n["text"] for n in verdict.get("notes", [])],
    }


def _waiting(rec: ShotRecord) -> bool:
    return rec.held is not None and rec.state in (ShotState.PENDING, ShotState.UPLOADING)


def state_label(rec: ShotRecord) -> str:
    """The state as ``status`` shows it; ``pending (budget)`` for a shot the guard held back.

    The hold-back kinds are ``budget`` and ``price unknown``.
    """
    return f"pending ({rec.held})" if _waiting(rec) else rec.state.value


def render_table(state: RunState, order: Sequence[str] | None = None, *, max_rows: int = 40) -> str:
    """A plain-text summary: counts per state, then one row per shot.

    With more than ``max_rows`` shots only those needing attention (and not done) are listed.
    """
    ids = [i for i in (order if order is not None else state.shots) if i in state.shots]
    recs = [state.shots[i] for i in ids]
    if len(recs) > max_rows:
        recs = [r for r in recs if r.state != ShotState.DONE][:max_rows]
    parts = []
    tally = {k: v for k, v in counts(state).items() if v}
    if state.simulated:
        parts.append("rehearsal (--simulate): simulated jobs and clips, nothing was paid")
    parts.append("  ".join(f"{k}: {v}" for k, v in tally.items()) or "no shots")
    if recs:
        rows: list[tuple[str, ...]] = [("shot", "state", "provider/model", "job", "output / error")]
        for rec in recs:
            detail = rec.output if rec.state == ShotState.DONE else redact(rec.error or "")
            rows.append(
                (
                    rec.id,
                    state_label(rec),
                    f"{rec.provider}/{rec.model}",
                    (rec.job.job_id[:14] if rec.job else "-"),
                    _clip(detail or "", 70),
                )
            )
        parts.append(text_table(rows))
    return "\n".join(parts)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def attention(state: RunState) -> list[ShotRecord]:
    """Shots that ended failed or need a reconcile decision."""
    return [r for r in state.shots.values() if r.state in _ATTENTION]
