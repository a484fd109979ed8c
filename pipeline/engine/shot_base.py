"""What every stage of a shot shares: its context, recording, failing and stopping.

The stages themselves: :mod:`~pipeline.engine.submit`, :mod:`~pipeline.engine.polling`,
:mod:`~pipeline.engine.fetching`; :class:`~pipeline.engine.stages.ShotMachine` runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from pipeline.engine.context import RunContext
from pipeline.engine.guarded import GuardedCalls
from pipeline.engine.limits import CallKind
from pipeline.journal.state import ShotRecord
from pipeline.models import (
    Charged,
    Event,
    JobHandle,
    Shot,
    ShotState,
)

log = logging.getLogger("pipeline")


class Stop(Exception):
    """The shot ends here (its final state is already recorded)."""


class ShotBase:
    """A shot's stage machine: its state and the helpers every stage uses to record."""

    def __init__(self, ctx: RunContext, shot: Shot, rec: ShotRecord | None) -> None:
        self.ctx = ctx
        self.shot = shot
        self.rec = rec
        self.provider = ctx.providers[shot.provider]
        self.gate = ctx.gates[shot.provider]
        self.settings = ctx.settings[shot.provider]
        self.calls = GuardedCalls(self.provider, self.gate)
        self._est_usd: float | None = None
        self._reserved = False

    async def _emit(self, ev: Event, state: ShotState, detail: str = "", **fields: Any) -> None:
        await self.ctx.append(ev, self.shot.id, **fields)
        self.ctx.observer.transition(self.shot, state, detail)

    def _job(self) -> JobHandle | None:
        return self.rec.job if self.rec else None

    async def _call(
        self,
        fn: Callable[[], Awaitable[Any]],
        kind: CallKind = CallKind.OTHER,
        deadline: float | None = None,
    ) -> Any:
        """A free, idempotent provider call (gate, retries, breaker): see ``engine.guarded``."""
        return await self.calls.call(fn, kind, deadline=deadline)

    def _fetch_pending(self, reason: str) -> None:
        """Leave the shot in ``fetching``: the video exists but could not be fetched now.

        ``resume`` tries the fetch again; it never becomes a new, paid attempt.
        """
        log.warning("%s: %s; run `pipeline resume` to fetch it again", self.shot.id, reason)
        self.ctx.observer.transition(self.shot, ShotState.FETCHING, reason)
        raise Stop

    def _release(self) -> None:
        """Give the budget back: this shot's submit created nothing (or was refunded)."""
        if self._reserved:
            self.ctx.spend.release(self._est_usd)
            self._reserved = False
            self.ctx.observer.spending(self.ctx.spend.committed_usd, self.ctx.spend.limit_usd)

    async def _fail(self, reason: str, charged: Charged) -> NoReturn:
        if charged == Charged.NO:
            self._release()
        await self._emit(
            Event.FAILED, ShotState.FAILED, reason, reason=reason, charged=charged.value
        )
        raise Stop


def charged_of(refunded: bool | None) -> Charged:
    """Whether a job that ended without a video was paid for, from the provider's refund flag."""
    if refunded is None:
        return Charged.UNKNOWN
    return Charged.NO if refunded else Charged.YES
