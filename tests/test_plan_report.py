"""`pipeline plan` (statuses and estimates, matched against a simulator's ledger), report.json
and `pipeline pick`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline import sim
from pipeline.engine.options import RunOptions
from pipeline.engine.plan import make_plan
from pipeline.engine.runner import execute
from pipeline.manifest.loader import load_manifest
from pipeline.sim.common import LEDGER, SimConfig
from tests.reliability.harness import options_for

VENICE = (
    "version: 1\nname: priced\n"
    "defaults: {provider: venice, model: wan-2-7-text-to-video, resolution: 720p}\n"
    "scenes:\n  - id: a\n    shots:\n"
    "      - {id: s1, prompt: one, duration: 5}\n"
    "      - {id: s2, prompt: two, duration: 10}\n"
    "      - {id: s3, prompt: three, duration: 15, resolution: 1080p}\n"
    "      - {id: s4, prompt: four, duration: 5, takes: 2}\n"
)


async def test_plan_matches_the_ledger_of_the_venice_simulator(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(VENICE)
    manifest = load_manifest(path)
    run_dir = tmp_path / "jobs" / "priced"
    async with sim.running(
        {"venice"}, config=SimConfig(api_key=sim.SIM_KEY, latency_s=0.2)
    ) as sims:
        options = options_for(sims)
        plan = await make_plan(manifest, run_dir, options)
        assert {s.source for s in plan.shots} == {"quote"}
        assert {s.status for s in plan.shots} == {"new"}
        expected = plan.totals()["expected_usd"]
        result = await execute(manifest, run_dir, options)
        charged = sum(c.cost_usd or 0.0 for c in sims["venice"].app[LEDGER].charges)
        after = await make_plan(manifest, run_dir, options)
    assert result.exit_code == 0
    assert expected > 0
    assert abs(expected - charged) <= 0.01 * charged  # within 1 %
    assert {s.status for s in after.shots} == {"done"}
    assert after.totals()["shots_to_run"] == 0
    assert not (run_dir / "report.json").exists()  # execute() writes no outputs; the CLI does


LOCAL = (
    "version: 1\nname: states\ndefaults: {provider: local, duration: 1}\n"
    "providers:\n  relaydance: {base_url: 'https://relay.example/v1'}\n"
    "  seedance2: {usd_per_credit: 0.01}\n"
    "scenes:\n  - id: a\n    shots:\n"
    "      - {id: s1, prompt: one}\n      - {id: s2, prompt: two}\n"
    "      - {id: s3, prompt: three}\n"
)


async def test_plan_reports_new_changed_unchanged_done_orphaned(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(LOCAL)
    run_dir = tmp_path / "jobs" / "states"
    await execute(load_manifest(path), run_dir, RunOptions())
    edited = (
        LOCAL.replace("{id: s1, prompt: one}", "{id: s1, prompt: ONE}").replace(  # changed
            "      - {id: s3, prompt: three}\n", ""
        )  # orphaned
        + "      - {id: s4, prompt: four}\n"  # new
        + "      - {id: r1, prompt: relay, provider: relaydance, model: "
        "doubao-seedance-2-0-720p, duration: 5}\n"  # unknown price
         + "      - {id: d1, prompt: dance, provider: seedance2, duration: 5}\n"  # credits
    )
    path.write_text(edited)
    plan = await make_plan(load_manifest(path), run_dir, RunOptions())
    by_id = {s.id: s for s in plan.shots}
    assert by_id["a-s1"].status == "changed"
    assert by_id["a-s2"].status == "done"
    assert by_id["a-s3"].status == "orphaned"
    assert by_id["a-s4"].status == "new"
    assert by_id["a-r1"].usd is None  # unknown, never $0
    assert by_id["a-r1"].source == "unknown"
    assert by_id["a-d1"].credits == 40  # seedance-2.0, 5 s, 720p, text-to-video [documented]
    assert by_id["a-d1"].usd == 0.4
    totals = plan.totals()
    assert totals["unknown"] == 1
    assert totals["low_usd"] == 0.4
    assert totals["expected_usd"] > totals["low_usd"]


def test_report_and_pick_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: picks\ndefaults: {provider: local, duration: 1}\n"
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: one, takes: 2}\n"
        "      - {id: s2, prompt: two}\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert cli("run", "m.yaml", "--no-progress").returncode == 0
    run_dir = tmp_path / "jobs" / "picks"
    report = json.loads((run_dir / "report.json").read_text())
    assert list(report["shots"]) == ["a-s1-t1", "a-s1-t2", "a-s2"]
    entry = report["shots"]["a-s1-t2"]
    assert entry["state"] == "done"
    assert entry["output"] == "shots/a-s1-t2.mp4"
    assert len(entry["sha256"]) == 64
    assert entry["polls"] >= 0
    assert entry["seconds_waited"] >= 0
    assert report["totals"]["done"] == 3
    assert cli("pick", str(run_dir), "a-s1", "2").returncode == 0
    assert json.loads((run_dir / "picks.json").read_text()) == {"a-s1": 2}
    bad = cli("pick", str(run_dir), "a-s2", "3")
    assert bad.returncode == 2
    assert "a-s2 has no take 3" in bad.stderr
    plan = cli("plan", "m.yaml", "--json")
    assert json.loads(plan.stdout)["totals"]["shots_to_run"] == 0
