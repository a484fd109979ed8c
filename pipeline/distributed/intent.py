"""The money rules across machines: a submit intent and the run's shared budget, in PostgreSQL.

Before a paid call, ONE transaction on the store (:meth:`Submits.open_intent`):

1. locks the run's row (``pipeline.runs ... FOR UPDATE``): every worker of the run checks and
   charges the budget one at a time;
2. reads this shot's intent row (``pipeline.submits``, one per run, shot and fingerprint): if
   there is one, nothing is charged or sent (see below);
3. sums what the run has committed (intents in the air, submitted and ambiguous ones: an
   ambiguous submit counts as charged) and refuses the shot when its price does not fit;
4. inserts the intent and appends ``submit_intent`` to the run's journal;

and commits. Only then is the provider called. The outcome is written by
:meth:`Submits.close_intent`, again with its journal event in the same transaction.

A shot whose step runs again (its worker died mid-submit and another recovered the workflow)
finds its intent: with an outcome it takes that outcome (``submitted``: the job is polled,
never submitted again); without one the submit was *in the air*: the shot becomes
``needs_reconcile`` (reconciled with the provider where the adapter can, see
:mod:`.workflows`), never paid again.

Table (schema ``pipeline``, created by :func:`ensure_schema`)::

    pipeline.submits (run_id, shot, fp, key, est_usd, outcome, job jsonb, intent_at, closed_at,
                      primary key (run_id, shot, fp))

``outcome``: NULL (in the air), ``submitted``, ``not_sent`` (provably nothing created: the charge
is released, the same key may be sent again), ``rejected`` (released), ``ambiguous`` (counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pipeline.journal.pgjournal import PgJournal
from pipeline.models import Event

_DDL = (
    "CREATE SCHEMA IF NOT EXISTS pipeline",
    """CREATE TABLE IF NOT EXISTS pipeline.submits (
        run_id text NOT NULL, shot text NOT NULL, fp text NOT NULL, key text NOT NULL,
        est_usd double precision, outcome text, job jsonb,
        intent_at timestamptz NOT NULL DEFAULT now(), closed_at timestamptz,
        PRIMARY KEY (run_id, shot, fp))""",
)
_DDL_LOCK = 0x5049504553554253  # "PIPESUBS": serialises the DDL of concurrent first starts

#: Outcomes that keep the shot's price committed against the budget (NULL: in the air).
COUNTED = ("submitted", "ambiguous")
SUBMITTED, NOT_SENT, REJECTED, AMBIGUOUS = "submitted", "not_sent", "rejected", "ambiguous"


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create ``pipeline.submits`` if missing (idempotent, safe from many processes)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for statement in _DDL:
            conn.execute(statement)


@dataclass(frozen=True, slots=True)
class Intent:
    """What :meth:`Submits.open_intent` found or wrote.

    Attributes:
        fresh: True when this call wrote the intent (the caller must now make the paid call);
            False when an earlier execution had written it.
        outcome: the recorded outcome of an earlier intent (None: in the air, or fresh).
        job: the recorded job (``JobHandle`` fields as JSON) when ``outcome`` is ``submitted``.
        key: the client reference sent (or to send) with the submit.
        held: why the spend guard refused the shot (``budget`` / ``price unknown``), else None.
        reason: the message for a held shot.
    """

    fresh: bool
    outcome: str | None = None
    job: Mapping[str, Any] | None = None
    key: str = ""
    held: str | None = None
    reason: str = ""


class Submits:
    """Submit intents and the shared budget of runs, over the journal's store.

    Args:
        journal: the run journal (its store is where intents live).
    """

    def __init__(self, journal: PgJournal) -> None:
        self.journal = journal

    def open_intent(
        self,
        run_id: str,
        shot: str,
        fp: str,
        *,
        key: str,
        est_usd: float | None,
        fields: Mapping[str, Any],
    ) -> Intent:
        """Check and charge the budget, then commit the intent and its ``submit_intent`` event.

        Args:
            run_id: the run.
            shot: the shot id.
            fp: the shot's fingerprint.
            key: the client reference the submit will carry.
            est_usd: the shot's price in USD (None: unknown).
            fields: the ``submit_intent`` event's fields (``att``, ``key``, ``fp``...).

        Returns:
            :class:`Intent`: fresh (call the provider now), earlier (do not), or held.

        Raises:
            StoreError / StoreDamaged: the store failed; nothing was committed.
        """
        with self.journal.pooled() as conn, conn.transaction():
            row = conn.execute(
                "SELECT budget_usd FROM pipeline.runs WHERE run_id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            budget = row[0] if row else None
            prior = conn.execute(
                "SELECT outcome, job, key FROM pipeline.submits "
                "WHERE run_id = %s AND shot = %s AND fp = %s",
                (run_id, shot, fp),
            ).fetchone()
            if prior is not None and prior[0] != NOT_SENT:
                return Intent(False, prior[0], prior[1], prior[2])
            if budget is not None:
                held = self._held(conn, run_id, float(budget), est_usd)
                if held is not None:
                    why, reason = held
                    self.journal.append(
                        run_id, Event.SUBMIT_HELD, shot, {"why": why, "reason": reason}, conn=conn
                    )
                    return Intent(False, key=key, held=why, reason=reason)
            conn.execute(
                "INSERT INTO pipeline.submits (run_id, shot, fp, key, est_usd) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id, shot, fp) DO UPDATE "
                "SET outcome = NULL, job = NULL, est_usd = EXCLUDED.est_usd, intent_at = now()",
                (run_id, shot, fp, key, est_usd),
            )
            self.journal.append(run_id, Event.SUBMIT_INTENT, shot, fields, conn=conn)
        return Intent(True, key=key)

    @staticmethod
    def _held(
        conn: psycopg.Connection[Any], run_id: str, budget: float, est_usd: float | None
    ) -> tuple[str, str] | None:
        if est_usd is None:
            return "price unknown", (
                f"price unknown and the run has a budget of ${budget:.2f}: not submitted "
                "(set providers.<name>.prices)"
            )
        row = conn.execute(
            "SELECT coalesce(sum(est_usd), 0) FROM pipeline.submits WHERE run_id = %s "
            "AND (outcome IS NULL OR outcome = ANY(%s))",
            (run_id, list(COUNTED)),
        ).fetchone()
        committed = float(row[0]) if row else 0.0
        if committed + est_usd > budget + 1e-9:
            return "budget", (
                f"budget: ${committed:.2f} of ${budget:.2f} committed, this shot costs "
                f"${est_usd:.2f}: not submitted"
            )
        return None

    def close_intent(
        self,
        run_id: str,
        shot: str,
        fp: str,
        *,
        outcome: str,
        event: Event,
        fields: Mapping[str, Any],
        job: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the submit's outcome and its journal event in one transaction.

        Raises:
            StoreError / StoreDamaged: the store failed; nothing was committed.
        """
        with self.journal.pooled() as conn, conn.transaction():
            # The run's row first, as open_intent takes it: one lock order, no deadlock.
            conn.execute("SELECT 1 FROM pipeline.runs WHERE run_id = %s FOR UPDATE", (run_id,))
            conn.execute(
                "UPDATE pipeline.submits SET outcome = %s, job = %s, closed_at = now() "
                "WHERE run_id = %s AND shot = %s AND fp = %s",
                (outcome, Jsonb(dict(job)) if job is not None else None, run_id, shot, fp),
            )
            self.journal.append(run_id, event, shot, fields, conn=conn)

    def committed_usd(self, run_id: str) -> float:
        """What the run has committed: intents in the air, submitted and ambiguous (USD)."""
        with self.journal.pooled() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(est_usd), 0) FROM pipeline.submits WHERE run_id = %s "
                "AND (outcome IS NULL OR outcome = ANY(%s))",
                (run_id, list(COUNTED)),
            ).fetchone()
        return float(row[0]) if row else 0.0
