"""One DBOS queue per provider account: its name, its limits, and what is in it.

Shots of every run and every manifest that use provider ``P`` with ``providers.P.account: A``
(default ``default``) go to the queue named ``P.A`` (:func:`queue_name`). DBOS enforces the
queue's limits across every process that dequeues from it:

- ``global_concurrency`` = ``max_in_flight``: a shot workflow counts from the moment a worker
  dequeues it (PENDING) until it ends, i.e. from before its submit until its job ends at the
  provider, so the provider never has more than ``max_in_flight`` of the account's jobs
  unfinished. The download and the object-storage put of a finished job run afterwards as a
  fetch workflow on :data:`FETCH_QUEUE`, so they never hold one of the account's slots. A workflow
  of a worker that died stays PENDING (and counted) until it is recovered; recovery puts it back
  ENQUEUED in its old place, and queues dequeue the oldest first, so it gets the next free slot
  before any newer shot can be submitted.
- ``limiter`` from ``requests_per_minute`` (:func:`limiter_for`): DBOS limits how many workflows
  *start* in a rolling window; a shot's submit is its first step, a moment after its start. The
  window is a fraction of a minute (``60/k`` seconds, at least 5) and the limit per window is
  chosen so that even a submit that lags its start by a whole window keeps every rolling minute
  at or under ``requests_per_minute`` (the cost: at most ``k/(k+1)`` of the nominal rate).

:func:`counts` reads DBOS's ``workflow_status`` table for ``pipeline status --store``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.settings import ProviderSettings

#: Name of the DBOS table (schema ``dbos``) a queue's workflows are rows of.
WORKFLOW_TABLE = "dbos.workflow_status"

#: The shortest limiter window (s): a submit follows its workflow's start well within it.
MIN_WINDOW_S = 5.0

#: How often a worker looks for work on each queue (s).
POLL_S = 0.25


#: The queue of run workflows (no limits): any worker may take a run's bookkeeping.
RUN_QUEUE = "pipeline.runs"

#: The queue of fetch workflows (download, verify, put): finished jobs, no account slot held.
FETCH_QUEUE = "pipeline.fetches"

#: Fetch workflows one worker process runs at once (downloads share its CPU and network).
FETCHES_PER_WORKER = 8


def register_run_queue() -> None:
    """Create the queues of run and fetch workflows if missing."""
    from dbos import DBOS

    # Each queue costs every worker a few queries per look: the run queue is looked at rarely.
    DBOS.register_queue(RUN_QUEUE, polling_interval_sec=1.0, on_conflict="always_update")
    DBOS.register_queue(
        FETCH_QUEUE,
        worker_concurrency=FETCHES_PER_WORKER,
        polling_interval_sec=2 * POLL_S,
        on_conflict="always_update",
    )


def queue_name(provider: str, account: str = "default") -> str:
    """The queue of ``provider``'s ``account``: ``"<provider>.<account>"``."""
    return f"{provider}.{account}"


def limiter_for(requests_per_minute: float | None) -> dict[str, Any] | None:
    """DBOS's ``limiter`` (``{"limit": starts, "period": seconds}``) for a submit rate.

    Picks ``k`` windows per minute (1 to 12, each at least :data:`MIN_WINDOW_S` long) and
    ``limit = floor(rpm / (k + 1))`` so that any 60 s, widened by one window of lag, spans at most
    ``k + 1`` windows: ``(k + 1) * limit <= rpm``. The ``k`` admitting the most starts per minute
    wins (ties: the smoother, larger ``k``). Below 2 per minute: one start per ``120 / rpm`` s.

    Returns:
        The limiter, or None for an unlimited rate.
    """
    if requests_per_minute is None:
        return None
    rpm = float(requests_per_minute)
    if rpm < 2:
        return {"limit": 1, "period": 120.0 / rpm}
    best_k, best_limit = 1, max(1, math.floor(rpm / 2))
    for k in range(1, int(60 / MIN_WINDOW_S) + 1):
        limit = math.floor(rpm / (k + 1))
        if limit >= 1 and k * limit >= best_k * best_limit:
            best_k, best_limit = k, limit
    return {"limit": best_limit, "period": 60.0 / best_k}


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """An account queue and its limits.

    Attributes:
        name: ``"<provider>.<account>"``.
        concurrency: jobs of the account unfinished at once (``max_in_flight``).
        limiter: DBOS's start limiter (:func:`limiter_for`), or None.
    """

    name: str
    concurrency: int
    limiter: dict[str, Any] | None

    @classmethod
    def of(cls, provider: str, settings: ProviderSettings) -> QueueSpec:
        """The queue for ``provider`` with its merged ``settings`` (account, limits)."""
        account = getattr(settings, "account", "default") or "default"
        return cls(
            queue_name(provider, account),
            settings.max_in_flight,
            limiter_for(settings.requests_per_minute),
        )

    def register(self) -> str | None:
        """Create or update the queue in DBOS (the latest registration's limits win).

        Returns:
            None, or what changed when the queue existed with other limits (a warning for the
            user: every run on the account now has these).
        """
        from dbos import DBOS

        old = DBOS.retrieve_queue(self.name)
        changed = None
        if old is not None and old.global_concurrency != self.concurrency:
            changed = (
                f"queue {self.name}: max_in_flight {old.global_concurrency} -> "
                f"{self.concurrency} for every run on this account (the latest manifest's)"
            )
        elif old is not None and (old.limiter or None) != (self.limiter or None):
            changed = (
                f"queue {self.name}: requests_per_minute changed for every run on this account "
                "(the latest manifest's)"
            )
        DBOS.register_queue(
            self.name,
            global_concurrency=self.concurrency,
            limiter=self.limiter,  # type: ignore[arg-type]
            polling_interval_sec=POLL_S,
            on_conflict="always_update",
        )
        return changed


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What one account queue holds right now.

    Attributes:
        name: the queue's name.
        in_flight: workflows a worker is running (dequeued, not finished).
        queued: workflows waiting for a slot.
    """

    name: str
    in_flight: int
    queued: int


_COUNTS = f"""
SELECT queue_name,
       count(*) FILTER (WHERE status = 'PENDING'),
       count(*) FILTER (WHERE status = 'ENQUEUED')
FROM {WORKFLOW_TABLE}
WHERE queue_name IS NOT NULL AND queue_name NOT LIKE '\\_dbos\\_%%'
  AND status IN ('PENDING', 'ENQUEUED')
GROUP BY queue_name ORDER BY queue_name
"""


def counts(conn: Any) -> Mapping[str, QueueCounts]:
    """In-flight and queued workflows per account queue, from DBOS's table (psycopg ``conn``).

    Returns:
        ``{queue name: QueueCounts}``; empty when DBOS's tables do not exist yet.
    """
    import psycopg

    try:
        rows = conn.execute(_COUNTS).fetchall()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return {}
    return {str(n): QueueCounts(str(n), int(p), int(q)) for n, p, q in rows}
