"""Replay: fold the checkpoint's records into each shot's current state (a pure function).

``replay(records)`` is deterministic: the same records always give the same state, and the state a
live runner holds equals ``replay`` of what it wrote. Transitions (README, resume semantics)::

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

Review records (``pipeline review``, ``pipeline pick``) change no shot's state; they fill the
run-level ``picks``, ``review`` and ``rerolls`` (:func:`_review`). ``reroll_requested`` also
adds its new take as a ``pending`` shot, which the next runner plans and submits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline._util.gcutil import gc_paused
from pipeline.journal.checkpoint import Fold, Record, ts_epoch
from pipeline.models import Event, JobHandle, MediaRef, MediaRole, ShotState


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
        held: why the spend guard last held the shot back (``budget``, ``price unknown``);
            None once a submit intent is written.
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
    held: str | None = None

    def reset(self) -> None:
        """Forget everything of a previous request (the shot was edited); keep attempt numbers."""
        attempt = self.attempt
        fresh = ShotRecord(self.id)
        for name in ShotRecord.__slots__:
            setattr(self, name, getattr(fresh, name))
        self.attempt = attempt


@dataclass(slots=True)
class RunState:
    """The whole run: its id, the manifest it was started from, and every shot in plan order.

    Attributes:
        simulated: True when the run was started as a ``--simulate`` rehearsal (its jobs exist
            only in simulators), False for a real run, None before the first ``run_started``.
        picks: ``"<scene>-<shot>"`` -> the chosen take's number (0: the pick was cleared).
        review: take id -> ``{"rejected": bool, "notes": [{"ts": ISO 8601, "text": str}]}``.
        rerolls: new take id -> ``{"key": "<scene>-<shot>", "take": int, "from": take id it
            copies, "ts": ISO 8601}``, in the order they were asked for.
        requests: id of every review request recorded -> its event (a request queued in
            ``RUN_DIR/inbox`` is recorded once, however often it is drained).
    """

    run_id: str | None = None
    manifest: str | None = None
    simulated: bool | None = None
    shots: dict[str, ShotRecord] = field(default_factory=dict)
    finished: bool = False
    picks: dict[str, int] = field(default_factory=dict)
    review: dict[str, dict[str, Any]] = field(default_factory=dict)
    rerolls: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)


# Transitions: ``(shot, ts of the record, the record's data fields)``; ``ts`` is used by those
# that remember a time. They take the parts of a record, not a Record, so that a log can be folded
# straight from its lines (:func:`folder`) without building a Record per line.
_Data = Mapping[str, Any]

# The states as module globals: ``ShotState.X`` is an attribute lookup on an Enum class, several
# times slower than a global, and these are read once per record.
_PENDING = ShotState.PENDING
_UPLOADING = ShotState.UPLOADING
_SUBMITTING = ShotState.SUBMITTING
_POLLING = ShotState.POLLING
_FETCHING = ShotState.FETCHING
_DONE = ShotState.DONE
_FAILED = ShotState.FAILED
_NEEDS_RECONCILE = ShotState.NEEDS_RECONCILE
_CANCELLED = ShotState.CANCELLED


def _planned(rec: ShotRecord, ts: str, d: _Data) -> None:
    if rec.fingerprint and rec.fingerprint != d.get("fp"):
        rec.reset()
    rec.fingerprint = str(d.get("fp", ""))
    rec.provider = str(d.get("prov", rec.provider))
    rec.model = str(d.get("model", rec.model))


def _uploaded(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.media[str(d["asset"])] = MediaRef(
        role=MediaRole(d["role"]),
        url=str(d["url"]),
        sha256=d.get("sha256"),
        mime=d.get("mime"),
        expires_at=d.get("expires_at"),
    )
    if rec.state == _PENDING:
        rec.state = _UPLOADING


def _intent(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _SUBMITTING
    rec.attempt = int(d.get("att", rec.attempt + 1))
    rec.key = d.get("key")
    rec.intent_ts = ts
    rec.reuse_attempt = False
    rec.error = None
    rec.held = None
    rec.est_usd = d.get("est_usd")


def _submitted(rec: ShotRecord, ts: str, d: _Data) -> None:
    data: dict[str, Any] = d.get("data") or {}
    cost_usd = d.get("cost_usd")
    credits = d.get("credits")
    rec.state = _POLLING
    rec.job = JobHandle(
        provider=str(d.get("prov", rec.provider)),
        job_id=str(d["job"]),
        model=str(d.get("model", rec.model)),
        submitted_at=ts_epoch(ts),
        data={str(k): str(v) for k, v in data.items()} if data else {},
        cost_usd=cost_usd,
        credits=credits,
    )
    rec.cost_usd = cost_usd
    rec.credits = credits
    rec.reuse_attempt = False


def _not_sent(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _PENDING
    rec.reuse_attempt = True
    rec.error = d.get("reason")


def _rejected(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _FAILED
    rec.charged = "no"
    rec.error = d.get("reason")


def _ambiguous(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _NEEDS_RECONCILE
    rec.error = d.get("reason")


def _status(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.status = str(d.get("raw") or d.get("status") or "")


def _completed(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _FETCHING
    rec.result_url = d.get("url")


def _fetched(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _DONE
    rec.output = d.get("path")
    rec.size = d.get("bytes")
    rec.sha256 = d.get("sha256")
    rec.error = None


def _failed(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _FAILED
    rec.error = d.get("reason")
    rec.charged = d.get("charged", "unknown")


def _held(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.held = d.get("why")
    rec.error = d.get("reason")


def _cancelled(rec: ShotRecord, ts: str, d: _Data) -> None:
    rec.state = _CANCELLED
    rec.error = d.get("reason")


# Keyed by Event members: a lookup with the member itself is an identity match.
_APPLY: dict[str, Callable[[ShotRecord, str, _Data], None]] = {
    Event.SHOT_PLANNED: _planned,
    Event.UPLOADED: _uploaded,
    Event.SUBMIT_INTENT: _intent,
    Event.SUBMITTED: _submitted,
    Event.SUBMIT_NOT_SENT: _not_sent,
    Event.SUBMIT_REJECTED: _rejected,
    Event.SUBMIT_AMBIGUOUS: _ambiguous,
    Event.SUBMIT_HELD: _held,
    Event.STATUS: _status,
    Event.COMPLETED: _completed,
    Event.FETCHED: _fetched,
    Event.FAILED: _failed,
    Event.CANCELLED: _cancelled,
}


#: Records that change no shot's state (see :func:`_review`).
REVIEW_EVENTS = frozenset(
    {Event.TAKE_PICKED, Event.TAKE_REJECTED, Event.NOTE_ADDED, Event.REROLL_REQUESTED}
)


def _verdict(state: RunState, take: str) -> dict[str, Any]:
    entry = state.review.get(take)
    if entry is None:
        entry = state.review[take] = {"rejected": False, "notes": []}
    return entry


def _review(state: RunState, ev: Event, shot: str, ts: str, d: _Data) -> None:
    """Fold a review record about take ``shot``; one without its fields changes nothing.

    ``take_picked`` sets the pick of ``key`` (and clears the take's rejection);
    ``take_rejected`` marks the take (and clears the pick when it was the chosen one);
    ``note_added`` appends the note; ``reroll_requested`` remembers the new take and adds it as
    a pending shot of the provider and model it copies.
    """
    key, take = d.get("key"), d.get("take")
    if not isinstance(key, str) or take.__class__ is not int:
        return
    req = d.get("req")
    if isinstance(req, str):
        state.requests[req] = ev.value
    if ev == Event.TAKE_PICKED:
        state.picks[key] = take
        if take and shot in state.review:
            state.review[shot]["rejected"] = False
    elif ev == Event.TAKE_REJECTED:
        rejected = d.get("rejected", True) is not False
        _verdict(state, shot)["rejected"] = rejected
        if rejected and state.picks.get(key) == take:
            state.picks[key] = 0
    elif ev == Event.NOTE_ADDED:
        text = d.get("text")
        if isinstance(text, str):
            _verdict(state, shot)["notes"].append({"ts": ts, "text": text})
    elif ev == Event.REROLL_REQUESTED:
        src = d.get("from")
        state.rerolls[shot] = {"key": key, "take": take, "from": src, "ts": ts}
        if shot not in state.shots:
            state.shots[shot] = ShotRecord(
                shot, provider=str(d.get("prov", "")), model=str(d.get("model", ""))
            )


def _run_event(state: RunState, ev: Event, d: _Data) -> None:
    """A record without a shot: only ``run_started`` and ``run_finished`` change the state."""
    if ev == "run_started":
        state.run_id = state.run_id or d.get("run")
        state.manifest = d.get("manifest", state.manifest)
        if state.simulated is None:  # the first start decides; later starts are checked against it
            state.simulated = bool(d.get("simulate", False))
        state.finished = False
    elif ev == "run_finished":
        state.finished = True


def _review_of_record(state: RunState, ev: Event, rec: ShotRecord, ts: str, d: _Data) -> None:
    _review(state, ev, rec.id, ts, d)


def folder(state: RunState) -> Fold:
    """A fold that applies each record it is given to ``state`` (in place), in log order.

    Pass it to :func:`pipeline.journal.checkpoint.load` /
    :func:`~pipeline.journal.checkpoint.parse` as ``fold``
    to replay a log without keeping its records: ``load(path, repair=False,
    fold=folder(state))`` leaves ``state`` equal to ``replay(load(path, repair=False).records)``.
    The fold takes a record's parts ``(seq, ts, ev, shot, data)`` (see
    :class:`~pipeline.journal.checkpoint.Record`) and raises what :func:`apply` raises.
    """
    shots = state.shots
    transitions = dict(_APPLY)
    for name in REVIEW_EVENTS:  # about a shot, but folded into the run's review fields
        transitions[name] = partial(_review_of_record, state, name)

    def fold(seq: int, ts: str, ev: Event, shot: str | None, data: _Data) -> None:
        if shot is None:
            _run_event(state, ev, data)
            return
        rec = shots.get(shot)
        if rec is None:
            if ev in REVIEW_EVENTS:  # tested only on a shot's first record: no cost per line
                _review(state, ev, shot, ts, data)
                return
            rec = shots[shot] = ShotRecord(shot)
        transitions[ev](rec, ts, data)

    return fold


def apply(state: RunState, r: Record) -> None:
    """Fold one record into ``state`` (what :func:`replay` does for each record, in order).

    Raises:
        KeyError / ValueError / TypeError: a record a writer of this format never produces
            (e.g. ``submitted`` without ``job``, an unknown media role).
    """
    shot = r.shot
    if shot is None:
        _run_event(state, r.ev, r.data)
        return
    if r.ev in REVIEW_EVENTS:
        _review(state, r.ev, shot, r.ts, r.data)
        return
    rec = state.shots.get(shot)
    if rec is None:
        rec = state.shots[shot] = ShotRecord(shot)
    _APPLY[r.ev](rec, r.ts, r.data)


def replay(records: Iterable[Record]) -> RunState:
    """Fold ``records`` (in log order) into a new :class:`RunState`.

    To replay a log file without holding its records, use :func:`folder` with
    :func:`pipeline.journal.checkpoint.load` instead (same result, a fraction of the memory).
    """
    state = RunState()
    fold = folder(state)
    with gc_paused():
        for r in records:
            fold(r.seq, r.ts, r.ev, r.shot, r.data)
    return state


def counts(state: RunState) -> dict[str, int]:
    """Number of shots in every state (all states listed, zeros included), in state order."""
    out = {s.value: 0 for s in ShotState}
    for rec in state.shots.values():
        out[rec.state.value] += 1
    return out
