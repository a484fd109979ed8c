"""`pipeline run --simulate`: a real multi-provider manifest against every simulator and the
simulated object store, end to end, with nothing started by hand."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline import sim
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.manifest.loader import load_manifest
from pipeline.render.clips import probe
from pipeline.sim import objectstore
from pipeline.sim.common import LEDGER, SimConfig
from pipeline.sim.venice import app as venice_sim
from pipeline.transfer.storage import StoreAccess

ROOT = Path(__file__).resolve().parent.parent


def _scrubbed_env() -> dict[str, str]:
    """A fresh clone's shell: no AWS_*, no PIPELINE_*, no provider keys, no user config."""
    drop = ("AWS_", "PIPELINE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {k: v for k, v in env.items() if not k.endswith("_API_KEY")}


@pytest.mark.slow
def test_provider_rehearsal_is_one_command_with_nothing_to_start(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    env = {**_scrubbed_env(), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "samples/providers.yaml",
            "--simulate",
            "--jobs-dir",
            str(jobs),
            "--no-progress",
            "-v",  # the simulated store logs every request it serves
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    announced = re.search(
        r"no account, no spend\): .*storage at (http://127\.0\.0\.1:(\d+))", res.stderr
    )
    assert announced is not None, res.stderr
    origin, port = announced.group(1), int(announced.group(2))
    run_dir = jobs / "provider-rehearsal"
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(run_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(status.stdout)
    assert doc["simulated"] is True
    assert doc["counts"]["done"] == len(doc["shots"]) == 10
    assert {s["state"] for s in doc["shots"]} == {"done"}
    assert {s["provider"] for s in doc["shots"]} == {"venice", "seedance2", "newapi", "relaydance"}
    for shot in doc["shots"]:
        info = probe(run_dir / shot["output"])
        assert info.codec == "h264"
        assert info.duration_s > 0
    # seedance2.ink takes only URLs: its 3 distinct local files went to the simulated store once
    # each (after the start's preflight object), and its simulator fetched each through its
    # presigned URL, as the real service would. The others got small files inline.
    served = re.findall(r"simulated storage: (\w+) /(\S+) -> (\d+)", res.stderr)
    puts = [key for method, key, code in served if method == "PUT" and code == "200"]
    preflight = [key for key in puts if "/.pipeline-preflight-" in key]
    media = sorted(key for key in puts if key not in preflight)
    assert len(preflight) == 1
    assert len(media) == 3
    assert all(key.startswith("pipeline-media/rehearsal/") for key in media)
    gets = {key for method, key, code in served if method == "GET" and code == "200"}
    assert set(media) <= gets
    events = [json.loads(line) for line in (run_dir / "checkpoint.jsonl").read_text().splitlines()]
    urls = [e["url"] for e in events if e.get("ev") == "uploaded"]
    assert len(urls) == 3  # seedance-s01's first frame, seedance-s02's first and last frames
    assert all(url.startswith(f"{origin}/pipeline-media/rehearsal/") for url in urls)
    assert all("X-Amz-Signature=" in url and "X-Amz-Expires=" in url for url in urls)
    # The store lived and ended with the run's own process: nothing listens there any more.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_local_media_for_a_url_only_provider_needs_storage(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "samples" / "media", tmp_path / "media")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nname: x\ndefaults: {provider: seedance2}\nscenes:\n  - id: a\n    shots:\n"
        "      - id: s1\n        prompt: hi\n        image: media/storm.jpg\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert f"{manifest}:7: storage: a-s1: seedance2 needs public URLs" in res.stderr


async def test_rehearsal_charges_every_shot_exactly_once(tmp_path: Path) -> None:
    manifest = load_manifest(ROOT / "samples" / "providers.yaml")
    names = {s.provider for s in manifest.shots}
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=0.3)
    async with sim.running(names, config=config) as sims, objectstore.running() as store:
        options = RunOptions(
            simulate=True,
            base_urls={n: r.base_url for n, r in sims.items()},
            api_keys=dict.fromkeys(sims, sim.SIM_KEY),
            overrides={key: {"poll_min_s": 0.05, "poll_max_s": 0.2} for key in sims},
            storage_access=StoreAccess(
                store.endpoint_url, store.access_key_id, store.secret_access_key, store.region
            ),
        )
        result = await execute(manifest, tmp_path / "jobs" / manifest.name, options)
    assert len(store.state.objects) == 3  # seedance2's three distinct files, nothing else
    assert result.exit_code == 0
    assert len(result.shots) == 10  # 9 shots, one with 2 takes
    for name, served in sims.items():
        jobs = [result.state.shots[s.id].job for s in manifest.shots if s.provider == name]
        charged = Counter(c.job_id for c in served.app[LEDGER].charges)
        assert set(charged.values()) == {1}, name
        assert set(charged) == {j.job_id for j in jobs if j is not None}, name
    venice_state = sims["venice"].app[venice_sim.STATE]
    assert venice_state.consent_requests == 1  # the portrait triggered Seedance consent once
    for shot in manifest.shots:  # Venice's free quote is recorded as the shot's cost
        if shot.provider == "venice":
            rec = result.state.shots[shot.id]
            assert rec.job is not None
            (charge,) = [
                c for c in sims["venice"].app[LEDGER].charges if c.job_id == rec.job.job_id
            ]
            assert rec.cost_usd == charge.cost_usd
            assert rec.cost_usd is not None
            assert rec.cost_usd > 0
