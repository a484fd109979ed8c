"""Provider-facing commands: `pipeline cancel` at a provider; `pipeline sim` standing servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio

from pipeline import sim
from pipeline.engine.actions import cancel
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import FILE, load
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event, ShotState
from pipeline.sim.common import LEDGER, SimConfig
from pipeline.sim.seedance2 import app as seedance2_sim


def _submitted(run_dir: Path) -> int:
    if not (run_dir / FILE).exists():
        return 0
    return sum(r.ev == Event.SUBMITTED for r in load(run_dir / FILE, repair=False).records)


async def test_cancel_stops_jobs_at_the_provider_and_records_it(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: cancel-me\ndefaults: {provider: seedance2, duration: 5}\n"
        "scenes:\n  - id: a\n    shots:\n"
        "      - {id: s1, prompt: one}\n      - {id: s2, prompt: two}\n"
    )
    manifest = load_manifest(path)
    run_dir = tmp_path / "jobs" / "cancel-me"
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=120)  # jobs that would run for minutes
    async with sim.running({"seedance2"}, config=config) as sims:
        options = RunOptions(
            simulate=True,
            base_urls={"seedance2": sims["seedance2"].base_url},
            api_keys={"seedance2": sim.SIM_KEY},
            overrides={"seedance2": {"poll_min_s": 0.05, "poll_max_s": 0.1}},
        )
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(execute, manifest, run_dir, options)
                while _submitted(run_dir) < 2:  # noqa: ASYNC110 (polling a file, not an event)
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()  # the runner stops; both jobs are still running
        result = await cancel(manifest, run_dir, options)
        app = sims["seedance2"].app
    assert {r.state for r in result.state.shots.values()} == {ShotState.CANCELLED}
    assert all("cancelled at seedance2" in (r.error or "") for r in result.state.shots.values())
    tasks = app[seedance2_sim.STATE].tasks
    assert all(t.cancelled for t in tasks.values())
    assert all(c.refunded for c in app[LEDGER].charges)
    assert len(app[LEDGER]) == 2


def test_sim_command_serves_every_provider_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sim", "--latency", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = {}
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[1].startswith("http://127.0.0.1:"):
                urls[parts[0]] = parts[1]
            if line.startswith("downloads:"):
                break
        assert set(urls) == {"venice", "seedance2", "newapi", "relaydance"}
        req = urllib.request.Request(
            urls["venice"] + "/models?type=video",
            headers={"Authorization": f"Bearer {sim.SIM_KEY}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["object"] == "list"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
