"""The command line end to end, in subprocesses, on the offline `local` provider."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.journal.checkpoint import load
from pipeline.journal.state import replay
from pipeline.manifest.loader import load_manifest
from pipeline.outputs.animatic import expected_frames
from pipeline.render.clips import probe

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def cli(
    *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoint_events(run_dir: Path) -> list[dict[str, object]]:
    text = (run_dir / "checkpoint.jsonl").read_text(errors="replace")
    out = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a torn tail left by SIGKILL
            out.append(json.loads(line))
    return out


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES, tmp_path / "samples")
    return tmp_path


def test_sample_storyboard_produces_playable_clips(workdir: Path) -> None:
    res = cli("run", "samples/storyboard.yaml", "--no-progress", cwd=workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    shots_dir = workdir / "jobs" / "harbor-dawn" / "shots"
    files = sorted(shots_dir.glob("*.mp4"))
    assert len(files) == 14  # 12 shots, two of them with 2 takes
    expected = {
        "dawn-s01": (5, 16 / 9),
        "dawn-s02-t1": (3, 16 / 9),
        "market-s01": (5, 21 / 9),
        "storm-s03": (3, 9 / 16),
        "storm-s01": (6, 16 / 9),
    }
    for stem, (seconds, ratio) in expected.items():
        info = probe(shots_dir / f"{stem}.mp4")
        assert info.codec == "h264"
        assert abs(info.duration_s - seconds) <= 1 / info.fps + 1e-6
        assert abs(info.width / info.height - ratio) < 0.02
    status = cli("status", "jobs/harbor-dawn", "--json", cwd=workdir)
    assert status.returncode == 0
    doc = json.loads(status.stdout)
    assert doc["run"] == "harbor-dawn"
    assert doc["counts"]["done"] == 14
    assert {s["state"] for s in doc["shots"]} == {"done"}
    assert set(doc["shots"][0]) == {
        "id",
        "state",
        "provider",
        "model",
        "job_id",
        "output",
        "error",
        "held",
        "picked",
        "rejected",
        "notes",
    }
    assert doc["simulated"] is False
    # The storyboard outputs are written after every run (issue 6).
    run_dir = workdir / "jobs" / "harbor-dawn"
    for name in ("storyboard.html", "contact-sheet.png", "animatic.mp4", "report.json"):
        assert (run_dir / name).is_file(), name
    animatic = probe(run_dir / "animatic.mp4")
    manifest = load_manifest(workdir / "samples" / "storyboard.yaml")
    state = replay(load(run_dir / "checkpoint.jsonl", repair=False).records)
    frames = expected_frames(manifest, state, {}, fps=12, slate_s=1.0)
    assert abs(animatic.frames - frames) <= 1  # chosen shots + scene slates, within 1 frame
    assert frames == 12 * (sum(s.duration for s in manifest.shots if s.take in (None, 1)) + 3)


def test_validate_reports_file_line_field_and_exit_2(workdir: Path) -> None:
    assert cli("validate", "samples/storyboard.yaml", cwd=workdir).returncode == 0
    bad = workdir / "samples" / "bad.yaml"
    bad.write_text(
        "version: 1\nname: bad\nscenes:\n  - id: a\n    shots:\n"
        "      - id: s1\n        prompt: x\n        duration: 99\n"
    )
    res = cli("validate", "samples/bad.yaml", cwd=workdir)
    assert res.returncode == 2
    assert "bad.yaml:8" in res.stderr
    assert "duration" in res.stderr


def _kill_manifest(workdir: Path, shots: int = 12, latency_s: float = 0.3) -> Path:
    lines = [
        "version: 1",
        "name: killme",
        "defaults: {provider: local, duration: 2}",
        f"providers: {{local: {{max_in_flight: 3, latency_s: {latency_s}}}}}",
        "scenes:",
        "  - id: k",
        "    shots:",
    ]
    for i in range(shots):
        lines.append(f"      - {{id: s{i:02d}, prompt: 'shot {i}', image: media/storm.jpg}}")
    path = workdir / "samples" / "kill.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sigkill_then_resume_finishes_without_paying_twice(workdir: Path) -> None:
    _kill_manifest(workdir)
    run_dir = workdir / "jobs" / "killme"
    proc = start("run", "samples/kill.yaml", "--no-progress", cwd=workdir)

    def progressed() -> bool:
        evs = checkpoint_events(run_dir) if (run_dir / "checkpoint.jsonl").exists() else []
        return sum(e["ev"] == "fetched" for e in evs) >= 2 and any(
            e["ev"] == "submitted" for e in evs[-6:]
        )

    wait_for(progressed)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = {p.name: sha(p) for p in (run_dir / "shots").glob("*.mp4")}
    assert before, "some shots should have finished before the kill"

    res = cli("resume", str(run_dir), "--no-progress", cwd=workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    evs = checkpoint_events(run_dir)
    submitted = Counter(str(e["shot"]) for e in evs if e["ev"] == "submitted")
    assert len(submitted) == 12
    assert set(submitted.values()) == {1}
    ledger = [
        json.loads(x) for x in (run_dir / "local-provider" / "ledger.jsonl").read_text().split()
    ]
    assert Counter(e["shot"] for e in ledger) == submitted  # exactly one charge per shot
    assert not list(run_dir.rglob("*.part"))
    for name, digest in before.items():
        assert sha(run_dir / "shots" / name) == digest  # done shots untouched
    assert len(list((run_dir / "shots").glob("*.mp4"))) == 12


def test_sigint_stops_cleanly_and_resume_finishes(workdir: Path) -> None:
    _kill_manifest(workdir, shots=9)
    run_dir = workdir / "jobs" / "killme"
    proc = start("run", "samples/kill.yaml", "--no-progress", cwd=workdir)
    wait_for(
        lambda: (
            (run_dir / "checkpoint.jsonl").exists()
            and any(e["ev"] == "submitted" for e in checkpoint_events(run_dir))
        )
    )
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "pipeline resume" in out
    evs = checkpoint_events(run_dir)
    intents = [e for e in evs if e["ev"] == "submit_intent"]
    outcomes = [e for e in evs if e["ev"] in ("submitted", "submit_ambiguous", "submit_not_sent")]
    assert len(outcomes) == len(intents)  # every submit sent was recorded
    res = cli("resume", str(run_dir), "--no-progress", cwd=workdir)
    assert res.returncode == 0, res.stderr
    evs = checkpoint_events(run_dir)
    assert Counter(str(e["shot"]) for e in evs if e["ev"] == "submitted") == Counter(
        {f"k-s{i:02d}": 1 for i in range(9)}
    )
    assert _ledger(run_dir) == Counter({f"k-s{i:02d}": 1 for i in range(9)})  # R18


def test_second_runner_on_the_same_run_directory_is_refused(workdir: Path) -> None:
    # two rounds of 5 s jobs: the first runner outlives the second's start, even on a busy box
    _kill_manifest(workdir, shots=6, latency_s=5.0)
    run_dir = workdir / "jobs" / "killme"
    first = start("run", "samples/kill.yaml", "--no-progress", cwd=workdir)
    try:
        wait_for(lambda: (run_dir / "checkpoint.jsonl").exists())
        second = cli("run", "samples/kill.yaml", "--no-progress", cwd=workdir)
        assert first.poll() is None  # it still held the run directory
        assert second.returncode == 4
        assert "another" in second.stderr.lower()
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert _ledger(run_dir) == Counter({f"k-s{i:02d}": 1 for i in range(6)})  # R11


def _ledger(run_dir: Path) -> Counter[str]:
    """Charges per shot at the local provider (its fsynced ledger)."""
    lines = (run_dir / "local-provider" / "ledger.jsonl").read_text().splitlines()
    return Counter(json.loads(line)["shot"] for line in lines)


def test_resume_of_a_directory_that_is_not_a_run(workdir: Path) -> None:
    res = cli("resume", str(workdir / "nope"), cwd=workdir)
    assert res.returncode == 2
    assert "nope does not exist" in res.stderr
