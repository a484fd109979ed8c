"""R8 (429 without a retry storm), R9 (rate limits hold, polls jittered), R10 (circuit breaker)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from pipeline import sim
from pipeline.engine.options import EXIT_OK, RunOptions, RunResult
from pipeline.engine.runner import execute
from pipeline.errors import Ambiguous
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig
from tests.fakes import FakeService, fake_spec
from tests.reliability.harness import manifest, options_for, run


async def test_r08_429_storm_pauses_every_task_and_loses_nothing(tmp_path: Path) -> None:
    path = manifest(tmp_path, "seedance2", 6, settings="max_in_flight: 6")
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=0.3)
    async with sim.running({"seedance2"}, config=config) as sims:
        plan = sims["seedance2"].app[FAULTS]
        storm_end = time.monotonic() + 2.0
        plan.add(Fault("*", FaultKind.RATE_LIMIT, retry_after=1.0, until=storm_end))
        _, result = await run(path, options_for(sims))
        ledger = sims["seedance2"].app[LEDGER]
    assert result.exit_code == EXIT_OK  # every job finished and was fetched
    assert len(ledger) == 6  # one charge per shot, no duplicates
    log = plan.log
    limited = [t for t, _, status in log if status == 429]
    assert limited, "the storm must have been hit"
    # A shared gate: after any 429, no request reaches the provider before its Retry-After
    # (allowing 50 ms for requests that were already on the wire when the 429 came back).
    for t429 in limited:
        early = [t for t, _, _ in log if t429 + 0.05 < t < t429 + 1.0 - 0.02]
        assert not early, f"{len(early)} request(s) inside the Retry-After window"
    in_storm = [t for t, _, _ in log if t < storm_end]
    assert len(in_storm) <= 6 * 3  # tasks x (storm / Retry-After + 1): no storm of retries


#: How far the simulator's arrival stamp of one request may trail its send (same event loop; on
#: a machine busy with other test workers a stall of tens of ms happens), as a share of the
#: spacing 1/per_second: one call too many in a window shows as a span of at most
#: 1 - 1/per_second, so half a spacing of tolerance still catches it.
ARRIVAL_JITTER_SHARE = 0.5


@pytest.mark.parametrize("disk", ["quick", "slow-fsync"])
async def test_r09_submit_and_poll_rates_hold_in_every_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    if disk == "slow-fsync":  # a busy disk: each fsync (the submit intent's too) takes 0-40 ms
        fsync, rng = os.fsync, random.Random(9)

        def slow_fsync(fd: int) -> None:
            time.sleep(rng.uniform(0.0, 0.04))
            fsync(fd)

        monkeypatch.setattr(os, "fsync", slow_fsync)
    # 40/min and 120/min (Venice's defaults), scaled x15 in time: 10 submits/s, 30 polls/s.
    settings = "max_in_flight: 20, requests_per_minute: 600, polls_per_minute: 1800"
    path = manifest(tmp_path, "seedance2", 20, settings=settings)
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=0.5)
    async with sim.running({"seedance2"}, config=config) as sims:
        _, result = await run(path, options_for(sims))
        log = sims["seedance2"].app[FAULTS].log
    assert result.exit_code == EXIT_OK
    for route, per_second in (("submit", 10), ("poll", 30)):
        times = sorted(t for t, r, _ in log if r == route)
        assert len(times) > per_second, route
        # Every sliding 1 s window holds at most ``per_second`` calls: any per_second + 1
        # consecutive arrivals span at least 1 s. The simulator stamps arrivals in the same
        # event loop as the sends, which may shift a stamp by a few ms.
        spans = [b - a for a, b in zip(times, times[per_second:], strict=False)]
        assert min(spans) >= 1.0 - ARRIVAL_JITTER_SHARE / per_second, (route, min(spans))
    polls = sorted(t for t, r, _ in log if r == "poll")
    buckets = {int(t * 100) for t in polls}  # 10 ms buckets
    assert len(buckets) > len(polls) * 0.5  # jittered, not every shot polled at the same instant


async def _fake_run(
    tmp_path: Path, service: FakeService, *, shots: int, in_flight: int, settings: str
) -> RunResult:
    """Run ``shots`` shots on the fake provider with ``settings`` (its breaker knobs)."""
    registry = {"fake": fake_spec(service, max_in_flight=in_flight)}
    path = tmp_path / "m.yaml"
    lines = "".join(f"      - {{id: s{i}, prompt: 'p {i}'}}\n" for i in range(shots))
    path.write_text(
        "version: 1\nname: breaker\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        f"providers:\n  fake: {{{settings}}}\nscenes:\n  - id: a\n    shots:\n" + lines
    )
    m = load_manifest(path, registry=registry)
    return await execute(m, tmp_path / "jobs" / "breaker", RunOptions(registry=registry))


async def test_r10_breaker_stops_paid_calls_and_probes_with_a_free_call(tmp_path: Path) -> None:
    service = FakeService(submit_faults=["5xx"] * 100)
    knobs = "breaker_threshold: 3, breaker_cooldown_s: 0.2"
    result = await _fake_run(tmp_path, service, shots=10, in_flight=1, settings=knobs)
    calls = service.calls
    assert calls.count("submit") == 10  # every shot tried once: 5xx is never retried blindly
    # Never more than 3 paid calls in a row without a free probe in between, and the first
    # call after every opening is a probe, never a submit.
    run_length = 0
    for call in calls:
        run_length = run_length + 1 if call == "submit" else 0
        assert run_length <= 3, calls
    assert calls.count("probe") >= 3
    assert all(r.state == ShotState.NEEDS_RECONCILE for r in result.state.shots.values())
    assert service.ledger == []  # a 5xx that created nothing charged nothing


async def test_r10_breaker_waits_while_the_probe_keeps_failing(tmp_path: Path) -> None:
    service = FakeService(submit_faults=["5xx"] * 3, healthy=False)
    knobs = "breaker_threshold: 3, breaker_cooldown_s: 0.05, poll_deadline_s: 0.5"
    result = await _fake_run(tmp_path, service, shots=5, in_flight=1, settings=knobs)
    assert service.calls.count("submit") == 3  # no paid call while the provider stays sick
    assert service.calls.count("probe") >= 2
    waiting = [r for r in result.state.shots.values() if r.state == ShotState.PENDING]
    assert len(waiting) == 2  # held back, not failed: the next run tries them


async def test_r10_concurrent_paid_calls_overshoot_by_at_most_those_in_flight(
    tmp_path: Path,
) -> None:
    service = FakeService(submit_faults=["5xx"] * 100, healthy=False)
    knobs = "breaker_threshold: 3, breaker_cooldown_s: 0.05, poll_deadline_s: 0.3"
    await _fake_run(tmp_path, service, shots=12, in_flight=4, settings=knobs)
    # The 4 calls already on the wire when the first failures came back, then nothing: 8
    # shots wait for a provider that stays sick.
    assert service.calls.count("submit") <= 4


async def test_r10_every_adapter_probes_with_a_free_call(tmp_path: Path) -> None:
    from pipeline.providers import PROVIDERS
    from pipeline.providers.base import ProviderContext, SupportsProbe

    names = {"venice", "seedance2", "newapi", "relaydance"}
    async with sim.running(names, config=SimConfig(api_key=sim.SIM_KEY)) as sims:
        for name, served in sims.items():
            spec = PROVIDERS[name]
            settings = spec.defaults.model_copy(update={"base_url": served.base_url})
            ctx = ProviderContext(name, settings, tmp_path, api_key=sim.SIM_KEY, simulate=True)
            async with spec.factory(ctx) as provider:
                assert isinstance(provider, SupportsProbe), name
                await provider.probe()  # answers: the breaker may close
                served.app[FAULTS].add(Fault("*", FaultKind.SERVER_ERROR))
                with pytest.raises(Ambiguous):
                    await provider.probe()  # still sick: stays open
            assert len(served.app[LEDGER]) == 0, name  # a probe is never paid
