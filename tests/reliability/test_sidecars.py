"""R25: outputs are their own witness; a truncated or lost checkpoint never pays again.

End to end through the CLI on the offline `local` provider (real clips, a fsynced charge ledger
in RUN_DIR/local-provider/ledger.jsonl): an 8-shot run is finished once, then each test damages a
copy of it (truncated log, deleted log, corrupted video) and checks that `resume` / `run` stop
with exit 3 and pay nothing, that `pipeline repair` restores the verified videos as done, and
that the run then finishes paying only for shots without a verified video.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
MANIFEST = "samples/sidecars.yaml"
SHOTS = 8
SECRET = "sk-test-sidecar-secret-0123456789abcdef"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENICE_API_KEY": SECRET, "SEEDANCE2_API_KEY": SECRET}
    flags = ("--no-progress",) if args[0] in ("run", "resume") else ()
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args, *flags],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _ledger(run_dir: Path) -> Counter[str]:
    """Charges per shot at the local provider (its fsynced ledger)."""
    lines = (run_dir / "local-provider" / "ledger.jsonl").read_text().splitlines()
    return Counter(json.loads(line)["shot"] for line in lines)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _videos(run_dir: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted((run_dir / "shots").glob("*.mp4"))}


def _states(run_dir: Path, cwd: Path) -> dict[str, str]:
    res = cli("status", str(run_dir), "--json", cwd=cwd)
    doc = json.loads(res.stdout)
    return {s["id"]: s["state"] for s in doc["shots"]}


def _superseded(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "shots" / "superseded").glob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding an 8-shot run that is done (run once for the module)."""
    work = tmp_path_factory.mktemp("sidecars")
    shutil.copytree(SAMPLES, work / "samples")
    lines = [
        "version: 1",
        "name: sidecars",
        "defaults: {provider: local, duration: 2}",
        "providers: {local: {max_in_flight: 4, latency_s: 0.1}}",
        "scenes:",
        "  - id: a",
        "    shots:",
    ]
    lines += [f"      - {{id: s{i:02d}, prompt: 'shot {i}'}}" for i in range(SHOTS)]
    (work / MANIFEST).write_text("\n".join(lines) + "\n")
    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    return work


@pytest.fixture
def work(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run's working directory."""
    shutil.copytree(finished, tmp_path / "w")
    return tmp_path / "w"


def _run_dir(work: Path) -> Path:
    return work / "jobs" / "sidecars"


def _truncate(log: Path, fraction: float) -> int:
    lines = log.read_bytes().splitlines(keepends=True)
    keep = int(len(lines) * fraction)
    log.write_bytes(b"".join(lines[:keep]))
    return keep


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_truncated_log_stops_then_repair_restores_without_paying(
    work: Path, fraction: float
) -> None:
    run_dir = _run_dir(work)
    charges, videos = _ledger(run_dir), _videos(run_dir)
    assert len(videos) == SHOTS
    assert set(charges.values()) == {1}
    _truncate(run_dir / "checkpoint.jsonl", fraction)

    res = cli("resume", str(run_dir), cwd=work)
    assert res.returncode == 3, res.stderr + res.stdout
    assert "checkpoint.jsonl does not know" in res.stderr
    assert "verified video(s) in shots/" in res.stderr
    assert f"pipeline repair {run_dir}" in res.stderr
    assert "nothing will be paid again" in res.stderr
    assert _ledger(run_dir) == charges  # nothing paid

    res = cli("repair", str(run_dir), cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "restored as done" in res.stdout
    assert "0 skipped" in res.stdout

    res = cli("resume", str(run_dir), cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    assert set(_states(run_dir, work).values()) == {"done"}
    assert _ledger(run_dir) == charges  # 0 new charges
    assert _videos(run_dir) == videos
    assert _superseded(run_dir) == []


def test_lost_log_stops_then_repair_with_manifest_restores_without_paying(work: Path) -> None:
    run_dir = _run_dir(work)
    charges, videos = _ledger(run_dir), _videos(run_dir)
    (run_dir / "checkpoint.jsonl").unlink()

    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 3, res.stderr + res.stdout
    assert f"does not know {SHOTS} verified video(s)" in res.stderr
    assert f"pipeline repair jobs/sidecars --manifest {work / MANIFEST}" in res.stderr
    assert _ledger(run_dir) == charges

    res = cli("resume", str(run_dir), cwd=work)  # the log names no manifest: same advice
    assert res.returncode == 3, res.stderr + res.stdout
    assert "pipeline repair" in res.stderr
    res = cli("repair", str(run_dir), cwd=work)  # nothing says which manifest
    assert res.returncode == 2, res.stderr + res.stdout
    assert "--manifest" in res.stderr

    res = cli("repair", str(run_dir), "--manifest", MANIFEST, cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    assert f"{SHOTS} shot(s) restored as done" in res.stdout

    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    assert set(_states(run_dir, work).values()) == {"done"}
    assert _ledger(run_dir) == charges
    assert _videos(run_dir) == videos
    assert _superseded(run_dir) == []
    res = cli("repair", str(run_dir), cwd=work)  # idempotent: everything is known now
    assert res.returncode == 0
    assert f"{SHOTS} already done in the log" in res.stdout


def test_a_corrupted_video_is_not_restored_and_is_paid_again_once(work: Path) -> None:
    run_dir = _run_dir(work)
    charges = _ledger(run_dir)
    (run_dir / "checkpoint.jsonl").unlink()
    bad = run_dir / "shots" / "a-s03.mp4"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, another sha256
    bad.write_bytes(bytes(data))

    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 3, res.stderr + res.stdout
    assert f"does not know {SHOTS - 1} verified video(s)" in res.stderr
    assert "a-s03" not in res.stderr.split("verified video(s)")[1].split(")")[0]

    res = cli("repair", str(run_dir), "--manifest", MANIFEST, cwd=work)
    assert res.returncode == 1, res.stderr + res.stdout  # something needs attention
    assert f"{SHOTS - 1} shot(s) restored as done" in res.stdout
    why = "skipped a-s03.json: its video a-s03.mp4 does not match the recorded sha256"
    assert why in res.stdout

    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    assert set(_states(run_dir, work).values()) == {"done"}
    assert _ledger(run_dir) - charges == Counter({"a-s03": 1})  # paid again, exactly once
    old = [p.name for p in _superseded(run_dir)]  # the bad video left with its sidecar
    assert len(old) == 2
    assert {Path(n).suffix for n in old} == {".mp4", ".json"}
    side = json.loads((run_dir / "shots" / "a-s03.json").read_text())
    assert side["sha256"] == _sha(bad) != hashlib.sha256(bytes(data)).hexdigest()


def test_every_final_video_has_a_clean_sidecar(work: Path) -> None:
    run_dir = _run_dir(work)
    fetched = {}
    for line in (run_dir / "checkpoint.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["ev"] == "fetched":
            fetched[rec["shot"]] = rec
    videos = sorted((run_dir / "shots").glob("*.mp4"))
    assert len(videos) == SHOTS
    for video in videos:
        text = video.with_suffix(".json").read_text()
        assert SECRET not in text
        assert "://" not in text
        assert "http" not in text.lower()
        side = json.loads(text)
        shot = video.stem
        assert side["shot"] == shot
        assert side["provider"] == "local"
        assert side["sha256"] == _sha(video) == fetched[shot]["sha256"]
        assert side["bytes"] == video.stat().st_size == fetched[shot]["bytes"]
        assert side["job"]
        assert side["fingerprint"]
        assert side["model"]
        assert side["fetched_at"]
    manifest = work / MANIFEST  # an edited shot: its old video moves with its sidecar
    manifest.write_text(manifest.read_text().replace("'shot 1'", "'shot 1, at night'"))
    res = cli("run", MANIFEST, cwd=work)
    assert res.returncode == 0, res.stderr + res.stdout
    moved = sorted(p.suffix for p in _superseded(run_dir))
    assert moved == [".json", ".mp4"]
    assert all(v.with_suffix(".json").is_file() for v in (run_dir / "shots").glob("*.mp4"))
