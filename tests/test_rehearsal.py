"""`pipeline run --simulate`: a real multi-provider manifest against every simulator, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from pipeline import sim
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.manifest.loader import load_manifest
from pipeline.render.clips import probe
from pipeline.sim.common import LEDGER, SimConfig
from pipeline.sim.venice import app as venice_sim
from tests.conftest import S3

ROOT = Path(__file__).resolve().parent.parent


def test_provider_rehearsal_finishes_on_every_simulator(tmp_path: Path, s3: S3) -> None:
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    sample = tmp_path / "samples" / "providers.yaml"
    text = sample.read_text()
    text = text.replace("s3://pipeline-media/rehearsal", f"s3://{s3.bucket}/rehearsal")
    text = text.replace("http://127.0.0.1:9000", s3.endpoint)
    sample.write_text(text)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env["PIPELINE_STORAGE_ENDPOINT_URL"] = s3.endpoint  # confirms the sample's endpoint
    for name in ("VENICE_API_KEY", "SEEDANCE2_API_KEY", "NEWAPI_API_KEY", "RELAYDANCE_API_KEY"):
        env.pop(name, None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "samples/providers.yaml",
            "--simulate",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no account, no spend" in res.stderr
    run_dir = tmp_path / "jobs" / "provider-rehearsal"
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(status.stdout)
    assert doc["counts"]["done"] == 10
    assert {s["provider"] for s in doc["shots"]} == {"venice", "seedance2", "newapi", "relaydance"}
    for shot in doc["shots"]:
        info = probe(run_dir / shot["output"])
        assert info.codec == "h264"
        assert info.duration_s > 0
    # seedance2.ink takes only URLs: its 3 distinct local files went to storage once each, and
    # its simulator fetched them through the presigned URLs, as the real service would.
    puts = s3.requests("PUT")
    preflight = [url for url in puts if "/.pipeline-preflight-" in url]
    assert len(preflight) == 1  # the start's storage check: written, read back, deleted
    assert len(puts) - len(preflight) == 3
    assert len(s3.requests("GET")) >= 3
    # The others got small files inline as data URLs: nothing else was uploaded.
    assert len(s3.keys()) == 3


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


async def test_rehearsal_charges_every_shot_exactly_once(tmp_path: Path, s3: S3) -> None:
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    sample = tmp_path / "samples" / "providers.yaml"
    text = sample.read_text().replace("s3://pipeline-media/", f"s3://{s3.bucket}/")
    sample.write_text(text.replace("http://127.0.0.1:9000", s3.endpoint))
    manifest = load_manifest(sample)
    names = {s.provider for s in manifest.shots}
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=0.3)
    async with sim.running(names, config=config) as sims:
        options = RunOptions(
            simulate=True,
            base_urls={n: r.base_url for n, r in sims.items()},
            api_keys=dict.fromkeys(sims, sim.SIM_KEY),
            overrides={key: {"poll_min_s": 0.05, "poll_max_s": 0.2} for key in sims},
        )
        result = await execute(manifest, tmp_path / "jobs" / manifest.name, options)
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
