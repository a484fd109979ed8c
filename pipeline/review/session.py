"""One review session of a run directory: its live state, verdicts, re-rolls and output rebuilds.

What the routes call (:mod:`pipeline.review.routes`), with no HTTP in it:

- the run as it stands: the manifest (its re-rolled takes included), the tail's state, the picks
  in effect (:func:`pipeline.outputs.picks.read_picks`);
- :meth:`Session.record`: a review record, appended under the run lock or queued for the
  runner that holds it (:func:`pipeline.journal.inbox.record`), one at a time;
- :meth:`Session.quote`: what a re-roll of a take would cost and the budget left
  (:mod:`pipeline.engine.pricing`, :mod:`pipeline.engine.budget`; prices known offline: the
  runner still asks the provider for its quote and the spend guard still decides);
- the outputs (page, sheet, animatic, report) rebuilt in a worker thread after recorded
  verdicts, one rebuild at a time, coalesced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from pipeline.engine.budget import Spend
from pipeline.engine.options import provider_settings
from pipeline.engine.pricing import static_estimate
from pipeline.errors import CheckpointError
from pipeline.journal import inbox
from pipeline.journal.inbox import Request
from pipeline.manifest.expand import take_of
from pipeline.manifest.loader import Manifest
from pipeline.manifest.takes import next_take, pick_key, resolver, takes_of, with_rerolls
from pipeline.models import Event, Shot
from pipeline.outputs.cards import money
from pipeline.outputs.picks import read_picks
from pipeline.outputs.write import write_outputs
from pipeline.providers import PROVIDERS
from pipeline.review.tail import Tail

log = logging.getLogger("pipeline")

#: Seconds a rebuild of the outputs waits for more verdicts before it starts.
REBUILD_DELAY_S = 0.3


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a review request: ``recorded`` now, or queued for the runner."""

    recorded: bool
    shot: str
    message: str


class Session:
    """The review of one run directory (see the module docstring).

    Attributes:
        run_dir: the run directory.
        base: the manifest as loaded (without re-rolled takes).
        tail: the live state of the checkpoint.
        outputs: number of output rebuilds finished; ``outputs_error`` the last failure.
    """

    def __init__(self, run_dir: Path, manifest: Manifest) -> None:
        self.run_dir = run_dir
        self.base = manifest
        self.tail = Tail(run_dir)
        self.outputs = 0
        self.outputs_error: str | None = None
        self._lock = asyncio.Lock()
        self._rebuild_wanted = asyncio.Event()
        self._resolve = resolver(manifest)

    @property
    def manifest(self) -> Manifest:
        """The manifest with the re-rolled takes the log records."""
        return with_rerolls(self.base, self.tail.state)

    def picks(self) -> dict[str, int]:
        """The picks in effect (the checkpoint's over an old run's ``picks.json``)."""
        return read_picks(self.run_dir, self.tail.state)

    def take(self, shot_id: object) -> Shot | None:
        """The take ``shot_id`` of the manifest (re-rolls included), or None."""
        if not isinstance(shot_id, str):
            return None
        return next((s for s in self.manifest.shots if s.id == shot_id), None)

    def is_multi(self, shot: Shot) -> bool:
        """Whether ``shot`` has other takes (only then can it be picked)."""
        return len(takes_of(self.manifest.shots, pick_key(shot))) > 1

    async def record(self, request: Request) -> Outcome:
        """Record ``request`` now, or queue it when a runner holds the run.

        Raises:
            CheckpointError: the checkpoint cannot be read or written.
            OSError: the request cannot be queued.
        """
        async with self._lock:
            done, state = await inbox.record(self.run_dir, [request], self._resolve)
        self.tail.poll()
        shot = request.shot
        if request.ev == Event.REROLL_REQUESTED and done and state.rerolls:
            shot = list(state.rerolls)[-1]  # appended last, under the lock: this request's
        if done:
            self._rebuild_wanted.set()
            return Outcome(True, shot, f"{request.ev.replace('_', ' ')}: recorded")
        return Outcome(
            False,
            shot,
            f"{request.ev.replace('_', ' ')}: queued; the running runner records it "
            "within a second (it holds the run directory)",
        )

    def pending(self) -> list[Request]:
        """The requests queued in the inbox for a runner."""
        return inbox.pending(self.run_dir)

    async def flush(self) -> None:
        """Record what the inbox holds when no runner holds the run (left by one that ended)."""
        if not inbox.pending(self.run_dir):
            return
        async with self._lock:
            flushed = await inbox.flush(self.run_dir, self._resolve)
        if flushed:
            self.tail.poll()
            self._rebuild_wanted.set()

    def quote(self, shot: Shot) -> dict[str, Any]:
        """The price of a re-roll of ``shot`` and the budget left, as JSON values.

        Returns:
            ``{"shot", "take", "new_take", "usd" (None: unknown), "price", "source",
            "limit_usd", "committed_usd", "remaining_usd", "budget", "fits" (None: cannot
            tell)}``.
        """
        state = self.tail.state
        manifest = self.manifest
        key = pick_key(shot)
        take = next_take(self.base, state, key)
        own = {s.id for s in self.base.shots}
        template = shot if shot.id in own else takes_of(manifest.shots, key)[0]
        new = take_of(template, take, self.base.name)
        spec = PROVIDERS[new.provider]
        estimate = static_estimate(new, spec, provider_settings(self.base, new.provider))
        limit = self.base.budget.max_usd
        committed = Spend.of(state, limit).committed_usd
        remaining = None if limit is None else max(0.0, limit - committed)
        if estimate.usd is None:
            price, fits = "price unknown", None if limit is None else False
        else:
            price = money(estimate.usd)
            fits = None if remaining is None else estimate.usd <= remaining + 1e-9
        if limit is None:
            budget = f"No budget set (budget.max_usd); {money(committed)} committed so far."
        else:
            budget = f"Budget: {money(remaining or 0.0)} left of {money(limit)}."
        return {
            "shot": shot.id,
            "take": take,
            "new_take": new.id,
            "usd": estimate.usd,
            "price": price,
            "source": f"· {estimate.source}",
            "limit_usd": limit,
            "committed_usd": committed,
            "remaining_usd": remaining,
            "budget": budget,
            "fits": fits,
        }

    def budget_line(self) -> str:
        """One line for the page: the budget left, or that there is none."""
        limit = self.base.budget.max_usd
        committed = Spend.of(self.tail.state, limit).committed_usd
        if limit is None:
            return f"spent {money(committed)} · no budget set"
        return f"spent {money(committed)} of {money(limit)} budget"

    async def rebuild_outputs(self) -> None:
        """Rebuild the outputs after recorded verdicts, until cancelled (one at a time)."""
        while True:
            await self._rebuild_wanted.wait()
            await anyio.sleep(REBUILD_DELAY_S)  # more clicks coming: one rebuild for them
            self._rebuild_wanted.clear()
            try:
                await anyio.to_thread.run_sync(write_outputs, self.run_dir, self.base)
            except (OSError, CheckpointError) as exc:
                self.outputs_error = str(exc)
                log.warning("review: could not rebuild the outputs: %s", exc)
            else:
                self.outputs_error = None
            self.outputs += 1
            self.tail.bump_outputs()

    async def watch(self, interval: float) -> None:
        """Follow the log (and flush a left-over inbox) every ``interval`` s, until cancelled."""
        ticks = 0
        while True:
            await anyio.sleep(interval)
            self.tail.poll()
            ticks += 1
            if ticks % 4 == 0:
                with contextlib.suppress(CheckpointError, OSError):
                    await self.flush()
