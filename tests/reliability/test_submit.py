"""R2 (a lost submit answer is ambiguous, never retried blindly; adopt or pay again only when
asked), R3 (definite not-sent is retried as the same attempt), R19 (the spend guard)."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import stamina

from pipeline import sim
from pipeline.engine.actions import adopt
from pipeline.engine.options import EXIT_ATTENTION, EXIT_OK
from pipeline.engine.runner import execute
from pipeline.errors import NotSent
from pipeline.journal.checkpoint import FILE, load
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event, ShotState
from pipeline.providers.http import ApiClient
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig, serve
from tests.reliability.harness import manifest, options_for, run

SIM = SimConfig(api_key=sim.SIM_KEY, latency_s=0.2)


def _events(run_dir: Path, ev: Event) -> list[str]:
    return [str(r.shot) for r in load(run_dir / FILE, repair=False).records if r.ev == ev]


async def test_r02_lost_submit_answers_are_ambiguous_and_never_paid_twice(tmp_path: Path) -> None:
    path = manifest(tmp_path, "seedance2", 3)
    run_dir = tmp_path / "jobs" / "rel"
    async with sim.running({"seedance2"}, config=SIM) as sims:
        app = sims["seedance2"].app
        for kind in (FaultKind.RESET_AFTER, FaultKind.TRUNCATE, FaultKind.SERVER_ERROR_AFTER):
            app[FAULTS].add(Fault("submit", kind))  # the job is created, the answer is lost
        options = options_for(sims)
        _, first = await run(path, options)
        assert first.exit_code == EXIT_ATTENTION
        assert {r.state for r in first.state.shots.values()} == {ShotState.NEEDS_RECONCILE}
        assert sorted(_events(run_dir, Event.SUBMIT_AMBIGUOUS)) == ["a-s00", "a-s01", "a-s02"]
        assert len(app[LEDGER]) == 3  # charged, though no answer said so
        _, again = await run(path, options)  # a plain resume pays nothing again
        assert {r.state for r in again.state.shots.values()} == {ShotState.NEEDS_RECONCILE}
        assert len(_events(run_dir, Event.SUBMIT_INTENT)) == 3
        assert len(app[LEDGER]) == 3
        # The user finds a-s00's job on the dashboard and adopts it: fetched, not paid again.
        (charge,) = [c for c in app[LEDGER].charges if c.key and ":a-s00:" in c.key]
        await adopt(run_dir, "a-s00", charge.job_id, file=str(path), simulate=True)
        _, adopted = await run(path, options)
        assert adopted.state.shots["a-s00"].state == ShotState.DONE
        assert len(app[LEDGER]) == 3
        # Only an explicit --resubmit-ambiguous --shot a-s01 pays again, for that shot only.
        forced = options_for(sims, resubmit_ambiguous=frozenset({"*"}), only=frozenset({"a-s01"}))
        _, paid = await run(path, forced)
        assert paid.state.shots["a-s01"].state == ShotState.DONE
        assert paid.state.shots["a-s02"].state == ShotState.NEEDS_RECONCILE
        assert len(app[LEDGER]) == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_r03_refused_connections_are_retried_as_the_same_attempt(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there yet: connections are refused
    path = manifest(tmp_path, "seedance2", 2)
    app = sim.SIMULATORS["seedance2"].make_app(SIM)

    async def open_late() -> None:
        await anyio.sleep(0.4)
        async with serve(app, port=port):
            await anyio.sleep(30)

    with stamina.set_testing(False):  # real (short) backoff: the server comes up after 0.4 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_late)
            base = f"http://127.0.0.1:{port}"
            options = options_for(
                {"seedance2": sim.RunningSim("seedance2", base, app)},
                {"poll_min_s": 0.05},
            )
            _, result = await run(path, options)
            tg.cancel_scope.cancel()
    run_dir = tmp_path / "jobs" / "rel"
    assert result.exit_code == EXIT_OK
    assert len(app[LEDGER]) == 2  # charges equal the number of shots
    records = load(run_dir / FILE, repair=False).records
    not_sent = [r for r in records if r.ev == Event.SUBMIT_NOT_SENT]
    assert not_sent, "the first submits must have been refused"
    for shot in ("a-s00", "a-s01"):
        keys = {r.data["key"] for r in records if r.ev == Event.SUBMIT_INTENT and r.shot == shot}
        assert len(keys) == 1  # retried as the same attempt, with the same key


async def test_r03_connect_failures_map_to_not_sent() -> None:
    port = _free_port()
    client = ApiClient(f"http://127.0.0.1:{port}", headers={}, provider="x")
    try:
        raised = None
        try:
            await client.request("POST", "/v1/x", json_body={})
        except NotSent as exc:
            raised = exc
        assert raised is not None
        assert "could not connect" in str(raised)
    finally:
        await client.aclose()


async def test_r19_spend_guard_stops_intents_at_the_budget(tmp_path: Path) -> None:
    # Venice quotes $0.10/s for 720p: each 5 s shot costs $0.50 (the simulator's price table).
    path = tmp_path / "m.yaml"
    shots = "".join(f"      - {{id: s{i}, prompt: 'shot {i}'}}\n" for i in range(6))
    path.write_text(
        "version: 1\nname: budget\n"
        "defaults: {provider: venice, model: wan-2-7-text-to-video, duration: 5, "
        "resolution: 720p}\nbudget: {max_usd: 1.6}\n"
        "providers:\n  venice: {max_in_flight: 1}\nscenes:\n  - id: a\n    shots:\n" + shots
    )
    async with sim.running({"venice"}, config=SIM) as sims:
        app = sims["venice"].app
        app[FAULTS].add(Fault("submit", FaultKind.RESET_AFTER))  # ambiguous: counted as charged
        m = load_manifest(path)
        result = await execute(m, tmp_path / "jobs" / "budget", options_for(sims))
        charges = [c.cost_usd or 0.0 for c in app[LEDGER].charges]
    assert sum(charges) <= 1.6
    assert len(charges) == 3  # 1 ambiguous + 2 done = $1.50; a 4th would cross $1.60
    states = [r.state for r in result.state.shots.values()]
    assert states.count(ShotState.NEEDS_RECONCILE) == 1
    assert states.count(ShotState.DONE) == 2
    assert states.count(ShotState.PENDING) == 3
    held, more = result.spend.shortfall()
    assert held == 3
    assert more is not None
    assert abs(more - 1.5) < 1e-6
    assert result.exit_code == EXIT_ATTENTION
