"""Observers of a run: progress bars and log lines. They never own durability.

The runner calls an :class:`Observer` after each checkpointed transition; observers only display.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Never, Protocol, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.models import Shot, ShotState

log = logging.getLogger("pipeline")

#: Progress bars in stage order: a shot counts in a bar once it has passed that stage.
_STAGES: tuple[tuple[str, frozenset[ShotState]], ...] = (
    ("upload", frozenset({ShotState.SUBMITTING, ShotState.POLLING, ShotState.FETCHING})),
    ("submit", frozenset({ShotState.POLLING, ShotState.FETCHING})),
    ("generate", frozenset({ShotState.FETCHING})),
    ("fetch", frozenset()),
)
_ORDER = {
    ShotState.PENDING: 0,
    ShotState.UPLOADING: 0,
    ShotState.SUBMITTING: 1,
    ShotState.POLLING: 2,
    ShotState.FETCHING: 3,
    ShotState.DONE: 4,
}


class Observer(Protocol):
    """Receives run progress. All methods are synchronous and must be cheap."""

    def started(self, shots: Sequence[Shot], states: Mapping[str, ShotState]) -> None:
        """The run begins ``shots`` (those with work to do), currently in ``states``."""
        ...

    def transition(self, shot: Shot, state: ShotState, detail: str = "") -> None:
        """``shot`` entered ``state``; ``detail`` is a short reason (errors, job id)."""
        ...

    def spending(self, committed_usd: float, limit_usd: float | None) -> None:
        """Money committed so far (ambiguous submits included) and the budget, in USD."""
        ...

    def waiting(self, text: str) -> None:
        """What shots wait on besides their jobs (a 429 pause, the breaker); "" when nothing."""
        ...

    def finished(self) -> None:
        """The run ended (normally or not); release the display."""
        ...


class NullObserver:
    """Shows nothing."""

    def started(self, shots: Sequence[Shot], states: Mapping[str, ShotState]) -> None:
        """Ignore."""

    def transition(self, shot: Shot, state: ShotState, detail: str = "") -> None:
        """Ignore."""

    def spending(self, committed_usd: float, limit_usd: float | None) -> None:
        """Ignore."""

    def waiting(self, text: str) -> None:
        """Ignore (the runner logs waits itself)."""

    def finished(self) -> None:
        """Ignore."""


class LoggingObserver:
    """One log line per transition (``--verbose``); failures at WARNING."""

    def started(self, shots: Sequence[Shot], states: Mapping[str, ShotState]) -> None:
        """Log how many shots have work to do."""
        log.info("%d shot(s) to run", len(shots))

    def transition(self, shot: Shot, state: ShotState, detail: str = "") -> None:
        """Log the new state."""
        level = logging.WARNING if state in (ShotState.FAILED, ShotState.NEEDS_RECONCILE) else 10
        log.log(level, "%s: %s%s", shot.id, state.value, f" ({detail})" if detail else "")

    def spending(self, committed_usd: float, limit_usd: float | None) -> None:
        """Log the committed spend."""
        budget = f" of ${limit_usd:.2f}" if limit_usd is not None else ""
        log.info("spend: $%.2f%s committed", committed_usd, budget)

    def waiting(self, text: str) -> None:
        """Nothing more: the runner logs waits itself."""

    def finished(self) -> None:
        """Nothing to release."""


class TqdmObserver:
    """One tqdm bar per stage (upload, submit, generate, fetch) on stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bars: dict[str, tqdm[Never]] = {}
        self._level: dict[str, int] = {}
        self._failed = 0
        self._spend = ""
        self._waiting = ""
        self._redirect: contextlib.AbstractContextManager[None] | None = None

    def started(self, shots: Sequence[Shot], states: Mapping[str, ShotState]) -> None:
        """Create the bars with every shot's current stage already counted."""
        self._redirect = logging_redirect_tqdm()  # log lines print above the bars
        self._redirect.__enter__()
        total = len(shots)
        for pos, (name, _) in enumerate(_STAGES):
            self._bars[name] = tqdm(
                total=total,
                desc=f"{name:>8}",
                unit="shot",
                position=pos,
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
            )
        for shot in shots:
            self._level[shot.id] = 0
            self._advance(shot.id, states.get(shot.id, ShotState.PENDING))

    def _advance(self, shot_id: str, state: ShotState) -> None:
        new = _ORDER.get(state)
        if new is None:
            return
        old = self._level.get(shot_id, 0)
        names = [name for name, _ in _STAGES]
        for name in names[old:new]:
            self._bars[name].update(1)
        self._level[shot_id] = max(old, new)

    def transition(self, shot: Shot, state: ShotState, detail: str = "") -> None:
        """Advance the bars the shot has passed; count failures in the postfix."""
        if not self._bars:
            return
        self._advance(shot.id, state)
        if state in (ShotState.FAILED, ShotState.NEEDS_RECONCILE):
            self._failed += 1
            self._postfix()

    def spending(self, committed_usd: float, limit_usd: float | None) -> None:
        """Show spent / budget on the submit bar."""
        budget = f" / ${limit_usd:.2f}" if limit_usd is not None else ""
        self._spend = f"${committed_usd:.2f}{budget}"
        self._postfix()

    def waiting(self, text: str) -> None:
        """Show what shots wait on (a 429 pause, the breaker) on the generate bar."""
        if text != self._waiting:
            self._waiting = text
            if "generate" in self._bars:
                self._bars["generate"].set_postfix_str(f"waiting: {text}" if text else "")

    def _postfix(self) -> None:
        if not self._bars:
            return
        if self._spend:
            self._bars["submit"].set_postfix_str(f"spent {self._spend}")
        if self._failed:
            self._bars["fetch"].set_postfix_str(f"{self._failed} need attention")

    def finished(self) -> None:
        """Close the bars and give logging its handlers back."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
