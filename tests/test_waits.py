"""No silent waits: shots waiting on something other than their job are reported."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.engine import runner
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.models import Shot, ShotState
from pipeline.settings import ProviderSettings
from tests.fakes import FakeService, fake_spec
from tests.test_runner import manifest_for, write_manifest


class Recorder:
    """An observer that keeps what the progress bars were told to show about waits."""

    def __init__(self) -> None:
        self.waits: list[str] = []

    def started(self, shots: Sequence[Shot], states: Mapping[str, ShotState]) -> None:
        """Ignore."""

    def transition(self, shot: Shot, state: ShotState, detail: str = "") -> None:
        """Ignore."""

    def spending(self, committed_usd: float, limit_usd: float | None) -> None:
        """Ignore."""

    def waiting(self, text: str) -> None:
        """Keep it."""
        self.waits.append(text)

    def finished(self) -> None:
        """Ignore."""


async def test_shots_waiting_on_the_circuit_breaker_are_logged_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "WAIT_CHECK_S", 0.05)
    path = write_manifest(tmp_path, 5)
    service = FakeService(submit_faults=["5xx", "5xx"])  # two outages open the breaker
    spec = fake_spec(service, max_in_flight=2)
    settings = ProviderSettings(
        max_in_flight=2,
        poll_min_s=0.001,
        poll_max_s=0.002,
        poll_deadline_s=60,
        breaker_threshold=2,
        breaker_cooldown_s=0.6,
    )
    registry = {"fake": replace(spec, defaults=settings)}
    observer = Recorder()
    options = RunOptions(registry=registry, observer=observer)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        result = await execute(manifest_for(path, registry), tmp_path / "run", options)
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting: ")]
    assert waits, caplog.text
    assert "fake: " in waits[0]
    assert "shot(s) on the circuit breaker (the provider kept failing; a probe at" in waits[0]
    shown = [w for w in observer.waits if w]
    assert shown
    assert "circuit breaker" in shown[0]
    assert observer.waits[-1] == ""  # the wait ended: the bars say so too
    states = [rec.state for rec in result.state.shots.values()]
    assert states.count(ShotState.DONE) == 3  # the waiting shots went on after the probe
    assert states.count(ShotState.NEEDS_RECONCILE) == 2
