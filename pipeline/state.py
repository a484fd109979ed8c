"""Replay: fold the checkpoint's records into each shot's current state (a pure function).

``replay(records)`` is deterministic: the same records always give the same state, and the state a
live runner holds equals ``replay`` of what it wrote. Transitions (design.md §4, §6)::

    shot_planned      -> pending   (a changed fingerprint resets the shot; attempts keep counting)
    uploaded          -> media reference remembered (reused on resume while fresh)
    submit_intent     -> submitting (attempt, key, time of the intent)
    submit_not_sent   -> pending   (the same attempt and key may be sent again)
    submitted         -> polling   (job id and one-time data)
    submit_rejected   -> failed    (not charged)
    submit_ambiguous  -> needs_reconcile
    completed         -> fetching  (result URL)
    fetched           -> done      (output path, size, sha256)
    failed / cancelled-> failed / cancelled
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.checkpoint import Record, ts_epoch
from pipeline.models import JobHandle, MediaRef, MediaRole, ShotState


@dataclass(slots=True)
class ShotRecord:
    """What the log says about one shot.

    Attributes:
        id: shot id.
        state: current state.
        provider / model / fingerprint: of the shot as last planned.
        attempt: number of the latest submit attempt (0: none yet).
        reuse_attempt: True when the latest attempt provably created nothing and may be resent
            with the same key; otherwise the next submit opens attempt ``attempt + 1``.
        key: client reference of the latest attempt (``run:shot:attempt``).
        intent_ts: time of the latest submit intent (ISO 8601).
        job: the provider job, once submitted.
        result_url: where the finished video can be fetched (may be a one-time URL).
        media: asset key (content hash or URL) -> prepared media reference.
        output / size / sha256: the verified video (path relative to the run directory).
        error: last failure reason; charged: ``yes``/``no``/``unknown`` for failed shots.
        polls / status: number of status records and the provider's last status string.
        cost_usd / credits: what the provider said the job costs.
    """

    id: str
    state: ShotState = ShotState.PENDING
    provider: str = ""
    model: str = ""
    fingerprint: str = ""
    attempt: int = 0
    reuse_attempt: bool = False
    key: str | None = None
    intent_ts: str | None = None
    job: JobHandle | None = None
    result_url: str | None = None
    media: dict[str, MediaRef] = field(default_factory=dict)
    output: str | None = None
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    charged: str | None = None
    status: str = ""
    cost_usd: float | None = None
    credits: float | None = None
    est_usd: float | None = None

    def reset(self) -> None:
        """Forget everything of a previous request (the shot was edited); keep attempt numbers."""
        attempt = self.attempt
        fresh = ShotRecord(self.id)
        for name in ShotRecord.__slots__:
            setattr(self, name, getattr(fresh, name))
        self.attempt = attempt


@dataclass(slots=True)
class RunState:
    """The whole run: its id, the manifest it was started from, and every shot in plan order."""

    run_id: str | None = None
    manifest: str | None = None
    shots: dict[str, ShotRecord] = field(default_factory=dict)
    finished: bool = False


def _planned(rec: ShotRecord, r: Record) -> None:
    d = r.data
    if rec.fingerprint and rec.fingerprint != d.get("fp"):
        rec.reset()
    rec.fingerprint = str(d.get("fp", ""))
    rec.provider = str(d.get("prov", rec.provider))
    rec.model = str(d.get("model", rec.model))


def _uploaded(rec: ShotRecord, r: Record) -> None:
    d = r.data
    rec.media[str(d["asset"])] = MediaRef(
        role=MediaRole(d["role"]),
        url=str(d["url"]),
        sha256=d.get("sha256"),
        mime=d.get("mime"),
        expires_at=d.get("expires_at"),
    )
    if rec.state == ShotState.PENDING:
        rec.state = ShotState.UPLOADING


def _intent(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.SUBMITTING
    rec.attempt = int(r.data.get("att", rec.attempt + 1))
    rec.key = r.data.get("key")
    rec.intent_ts = r.ts
    rec.reuse_attempt = False
    rec.error = None
    rec.est_usd = r.data.get("est_usd")


def _submitted(rec: ShotRecord, r: Record) -> None:
    d = r.data
    data: dict[str, Any] = d.get("data") or {}
    rec.state = ShotState.POLLING
    rec.job = JobHandle(
        provider=str(d.get("prov", rec.provider)),
        job_id=str(d["job"]),
        model=str(d.get("model", rec.model)),
        submitted_at=ts_epoch(r.ts),
        data={str(k): str(v) for k, v in data.items()},
        cost_usd=d.get("cost_usd"),
        credits=d.get("credits"),
    )
    rec.cost_usd = d.get("cost_usd")
    rec.credits = d.get("credits")
    rec.reuse_attempt = False


def _not_sent(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.PENDING
    rec.reuse_attempt = True
    rec.error = r.data.get("reason")


def _rejected(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.FAILED
    rec.charged = "no"
    rec.error = r.data.get("reason")


def _ambiguous(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.NEEDS_RECONCILE
    rec.error = r.data.get("reason")


def _status(rec: ShotRecord, r: Record) -> None:
    rec.status = str(r.data.get("raw") or r.data.get("status") or "")


def _completed(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.FETCHING
    rec.result_url = r.data.get("url")


def _fetched(rec: ShotRecord, r: Record) -> None:
    d = r.data
    rec.state = ShotState.DONE
    rec.output = d.get("path")
    rec.size = d.get("bytes")
    rec.sha256 = d.get("sha256")
    rec.error = None


def _failed(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.FAILED
    rec.error = r.data.get("reason")
    rec.charged = r.data.get("charged", "unknown")


def _cancelled(rec: ShotRecord, r: Record) -> None:
    rec.state = ShotState.CANCELLED
    rec.error = r.data.get("reason")


_APPLY = {
    "shot_planned": _planned,
    "uploaded": _uploaded,
    "submit_intent": _intent,
    "submitted": _submitted,
    "submit_not_sent": _not_sent,
    "submit_rejected": _rejected,
    "submit_ambiguous": _ambiguous,
    "status": _status,
    "completed": _completed,
    "fetched": _fetched,
    "failed": _failed,
    "cancelled": _cancelled,
}


def apply(state: RunState, r: Record) -> None:
    """Fold one record into ``state`` (what :func:`replay` does for each record, in order)."""
    ev = r.ev.value
    if r.shot is None:
        if ev == "run_started":
            state.run_id = state.run_id or r.data.get("run")
            state.manifest = r.data.get("manifest", state.manifest)
            state.finished = False
        elif ev == "run_finished":
            state.finished = True
        return
    rec = state.shots.get(r.shot)
    if rec is None:
        rec = state.shots[r.shot] = ShotRecord(r.shot)
    _APPLY[ev](rec, r)


def replay(records: Iterable[Record]) -> RunState:
    """Fold ``records`` (in log order) into a :class:`RunState`."""
    state = RunState()
    for r in records:
        apply(state, r)
    return state


def counts(state: RunState) -> dict[str, int]:
    """Number of shots in every state (all states listed, zeros included), in state order."""
    out = {s.value: 0 for s in ShotState}
    for rec in state.shots.values():
        out[rec.state.value] += 1
    return out
