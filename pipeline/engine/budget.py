"""The spend guard: no submit intent may take the run past ``budget.max_usd`` (R19).

Money counts as committed from the moment an intent is written: a job submitted, running,
done, failed without a refund, or whose submit outcome is unknown (``needs_reconcile``, or an
intent with no outcome) is counted as charged at its recorded cost, else its estimate. A shot
whose price is unknown cannot be proved to fit, so with a budget it is held back too. Held-back
shots stay ``pending``; the summary says how much more budget would finish the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.journal.state import RunState, ShotRecord
from pipeline.models import ShotState


class Hold(NamedTuple):
    """Why the guard refused a submit.

    Attributes:
        why: the kind ``status`` shows as ``pending (...)``: ``price unknown`` or ``budget``.
        reason: one line for the log and the checkpoint.
    """

    why: str
    reason: str


_COMMITTED = frozenset(
    {
        ShotState.SUBMITTING,
        ShotState.POLLING,
        ShotState.FETCHING,
        ShotState.DONE,
        ShotState.NEEDS_RECONCILE,
        ShotState.CANCELLED,
    }
)


def committed_cost(rec: ShotRecord) -> float:
    """What a shot has (or may have) cost so far, in USD (0.0 when nothing is owed)."""
    charged = rec.state in _COMMITTED or (
        rec.state == ShotState.FAILED and rec.charged != "no" and rec.job is not None
    )
    if not charged:
        return 0.0
    return rec.cost_usd if rec.cost_usd is not None else (rec.est_usd or 0.0)


@dataclass
class Spend:
    """Committed money of one run against its limit (None: no budget).

    Attributes:
        limit_usd: the budget, or None.
        committed_usd: charged or possibly charged so far.
        held: shots refused by the guard, with their estimates (None: unknown price).
    """

    limit_usd: float | None = None
    committed_usd: float = 0.0
    held: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def of(cls, state: RunState, limit_usd: float | None) -> Spend:
        """The spend recorded in ``state`` (a replayed checkpoint)."""
        total = sum(committed_cost(rec) for rec in state.shots.values())
        return cls(limit_usd=limit_usd, committed_usd=total)

    def reserve(self, shot_id: str, est_usd: float | None) -> Hold | None:
        """Reserve ``est_usd`` for a submit; returns why it is refused, or None when it fits."""
        if self.limit_usd is None:
            if est_usd is not None:
                self.committed_usd += est_usd
            return None
        if est_usd is None:
            self.held[shot_id] = None
            return Hold(
                "price unknown",
                "price unknown, so it cannot be kept within budget.max_usd (set prices)",
            )
        if self.committed_usd + est_usd > self.limit_usd + 1e-9:
            self.held[shot_id] = est_usd
            return Hold(
                "budget",
                f"held back by the budget: ${self.committed_usd:.2f} of ${self.limit_usd:.2f} "
                f"committed, this shot needs ${est_usd:.2f}",
            )
        self.committed_usd += est_usd
        return None

    def release(self, est_usd: float | None) -> None:
        """Give back a reservation whose submit provably created nothing (or was refunded)."""
        if est_usd is not None:
            self.committed_usd = max(0.0, self.committed_usd - est_usd)

    def shortfall(self) -> tuple[int, float | None]:
        """Held-back shots and the extra budget they need (None when a price is unknown)."""
        prices = list(self.held.values())
        if any(p is None for p in prices):
            return len(prices), None
        return len(prices), sum(p for p in prices if p is not None)
