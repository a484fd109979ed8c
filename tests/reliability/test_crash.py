"""R1 (kill -9 anywhere: no duplicate charge, no lost video) and R5 (disk full is fail-stop),
with the runner as a subprocess against providers that outlive it: the `local` job store (it can
list its jobs, so lost answers are reconciled) and a standing seedance2.ink simulator (it cannot,
so they end as needs_reconcile)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import sim
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.errors import CheckpointError
from pipeline.journal.checkpoint import FILE, load, parse
from pipeline.journal.state import replay
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event, ShotState
from tests.fakes import FakeService, fake_spec

SHOTS = 20
KILLS = 50


def _start(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_loop(
    args: list[str], cwd: Path, env: dict[str, str] | None, seed: int, run_dir: Path
) -> None:
    """Start the command and kill -9 it, ``KILLS`` times.

    Every other kill is timed from the process's start (it may land in start-up); the others
    from the moment its checkpoint exists, so that on a slow or busy machine, where start-up
    alone can outlast the random delay, half the kills still land in the run itself.
    """
    rng = random.Random(seed)
    for i in range(KILLS):
        proc = _start(args, cwd, env)
        if i % 2:
            until = time.monotonic() + 60.0
            while not (run_dir / FILE).exists() and proc.poll() is None:
                assert time.monotonic() < until, "the run never opened its checkpoint"
                time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def _finish(run_dir: Path, cwd: Path, env: dict[str, str] | None) -> int:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "resume",
            str(run_dir),
            "--no-progress",
            "--trust-endpoints",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return res.returncode


def _check_files(run_dir: Path) -> dict[str, ShotState]:
    """Every final file matches its fetched record; no partial file anywhere; log is clean."""
    raw = (run_dir / FILE).read_bytes()
    assert not parse(raw).tail  # the checkpoint loads cleanly
    state = replay(parse(raw).records)
    for rec in state.shots.values():
        if rec.state == ShotState.DONE:
            assert rec.output is not None
            data = (run_dir / rec.output).read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec.sha256
    assert not list(run_dir.rglob("*.part"))
    outputs = {p.stem for p in (run_dir / "shots").glob("*.mp4")}
    assert outputs <= {sid for sid, r in state.shots.items() if r.state == ShotState.DONE}
    return {sid: rec.state for sid, rec in state.shots.items()}


@pytest.mark.slow
def test_r01_kill9_fifty_times_with_a_provider_that_can_reconcile(tmp_path: Path) -> None:
    shots = "".join(f"      - {{id: s{i:02d}, prompt: 'shot {i}'}}\n" for i in range(SHOTS))
    (tmp_path / "kill.yaml").write_text(
        "version: 1\nname: kill\ndefaults: {provider: local, duration: 1}\n"
        "providers: {local: {max_in_flight: 4, latency_s: 0.3}}\n"
        "scenes:\n  - id: a\n    shots:\n" + shots
    )
    run_dir = tmp_path / "jobs" / "kill"
    _kill_loop(["run", "kill.yaml", "--no-progress"], tmp_path, None, 1, run_dir)
    assert _finish(run_dir, tmp_path, None) == 0
    states = _check_files(run_dir)
    assert set(states.values()) == {ShotState.DONE}  # every video, none lost
    ledger = [
        json.loads(line)
        for line in (run_dir / "local-provider" / "ledger.jsonl").read_text().splitlines()
    ]
    charges = Counter(entry["shot"] for entry in ledger)
    print(
        f"R1 local: {KILLS} kills, {len(charges)} shots charged, max charges per shot "
        f"{max(charges.values())}, done {sum(1 for v in states.values() if v == ShotState.DONE)}"
    )
    assert len(charges) == SHOTS
    assert max(charges.values()) == 1  # 0 duplicate charges
    state = replay(load(run_dir / FILE, repair=False).records)
    for entry in ledger:  # each final file is the provider's own bytes for the adopted job
        rec = state.shots[entry["shot"]]
        assert rec.job is not None
        rendered = run_dir / "local-provider" / "jobs" / f"{rec.job.job_id}.mp4"
        assert hashlib.sha256(rendered.read_bytes()).hexdigest() == rec.sha256


@pytest.fixture(scope="module")
def standing_sim() -> Iterator[str]:
    """`pipeline sim` in its own process; yields the seedance2 base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sim", "--latency", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "seedance2":
                url = parts[1]
            if line.startswith("downloads:"):
                break
        assert url
        yield url
    finally:
        # Ctrl-C first (the server's own shutdown); a server still closing keep-alive
        # connections after 15 s is killed, so the teardown has a deadline of its own.
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=15)


def _sim_manifest(path: Path, url: str, name: str, shots: int) -> None:
    host = url.split("/")[2]
    lines = "".join(f"      - {{id: s{i:02d}, prompt: '{name} {i}'}}\n" for i in range(shots))
    path.write_text(
        f"version: 1\nname: {name}\ndefaults: {{provider: seedance2, duration: 5}}\n"
        f"providers:\n  seedance2: {{base_url: '{url}', max_in_flight: 4, poll_min_s: 0.05, "
        f"poll_max_s: 0.2}}\ndownloads: {{allow_hosts: ['{host}']}}\n"
        "scenes:\n  - id: a\n    shots:\n" + lines
    )


def _sim_charges(url: str, run_dir: Path) -> Counter[str]:
    """Charges per shot of this run, from the simulator's ledger (keyed run:shot:attempt)."""
    origin = "/".join(url.split("/")[:3])
    with urllib.request.urlopen(f"{origin}/_sim/ledger", timeout=10) as resp:
        ledger = json.load(resp)
    run_id = replay(load(run_dir / FILE, repair=False).records).run_id
    return Counter(c["key"].split(":")[1] for c in ledger if c["key"].startswith(f"{run_id}:"))


def _sim_env() -> dict[str, str]:
    return {**os.environ, "SEEDANCE2_API_KEY": sim.SIM_KEY}


@pytest.mark.slow
def test_r01_kill9_fifty_times_with_a_provider_that_cannot(
    tmp_path: Path, standing_sim: str
) -> None:
    _sim_manifest(tmp_path / "kill.yaml", standing_sim, "killsim", SHOTS)
    env = _sim_env()
    run_dir = tmp_path / "jobs" / "killsim"
    args = ["run", "kill.yaml", "--no-progress", "--trust-endpoints"]
    _kill_loop(args, tmp_path, env, 2, run_dir)
    assert _finish(run_dir, tmp_path, env) in (0, 1)  # 1: some shots need the user
    states = _check_files(run_dir)
    assert len(states) == SHOTS
    assert set(states.values()) <= {ShotState.DONE, ShotState.NEEDS_RECONCILE}  # or reported
    charges = _sim_charges(standing_sim, run_dir)
    reconcile = sum(1 for v in states.values() if v == ShotState.NEEDS_RECONCILE)
    print(
        f"R1 seedance2 sim: {KILLS} kills, {sum(charges.values())} charges for "
        f"{len(charges)} shots, max per shot {max(charges.values())}, done "
        f"{SHOTS - reconcile}, needs_reconcile {reconcile}"
    )
    assert max(charges.values()) == 1  # 0 automatic resubmits: never two charges for a shot
    done = {s for s, st_ in states.items() if st_ == ShotState.DONE}
    assert done <= set(charges)


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_r05_file_size_limit_is_fail_stop_and_the_next_run_finishes(
    tmp_path: Path, standing_sim: str
) -> None:
    _sim_manifest(tmp_path / "full.yaml", standing_sim, "diskfull", 12)
    env = _sim_env()
    command = [sys.executable, "-m", "pipeline", "run", "full.yaml", "--no-progress"]
    command.append("--trust-endpoints")  # the manifest points at the standing simulator
    res = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: _limit_file_size(4000),
    )
    assert res.returncode == 3, res.stderr
    assert "checkpoint error" in res.stderr
    run_dir = tmp_path / "jobs" / "diskfull"
    intents = {
        str(r.shot)
        for r in parse((run_dir / FILE).read_bytes()).records
        if r.ev == Event.SUBMIT_INTENT
    }
    charged = _sim_charges(standing_sim, run_dir)
    assert set(charged) <= intents  # no paid call without a durable intent
    assert len(intents) < 12  # it stopped submitting
    again = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode in (0, 1), again.stderr  # repaired the tail and went on
    states = _check_files(run_dir)
    assert set(states.values()) <= {ShotState.DONE, ShotState.NEEDS_RECONCILE}
    assert max(_sim_charges(standing_sim, run_dir).values()) == 1


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=70))
def test_r05_enospc_on_the_nth_write_stops_paid_calls(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        service = FakeService()
        registry = {"fake": fake_spec(service, max_in_flight=2)}
        shots = "".join(f"      - {{id: s{i}, prompt: 'p {i}'}}\n" for i in range(5))
        path = tmp_path / "m.yaml"
        path.write_text(
            "version: 1\nname: nospace\ndefaults: {provider: fake, model: m1, duration: 2}\n"
            "scenes:\n  - id: a\n    shots:\n" + shots
        )
        m = load_manifest(path, registry=registry)
        run_dir = tmp_path / "jobs" / "nospace"
        real_write = os.write
        calls = 0

        def full_disk(fd: int, data: bytes) -> int:
            nonlocal calls
            calls += 1
            if calls >= n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        os.write = full_disk  # type: ignore[assignment]
        try:
            with pytest.raises(CheckpointError):
                anyio.run(execute, m, run_dir, RunOptions(registry=registry))
        except pytest.fail.Exception:
            pass  # n was past the run's last write: nothing failed
        finally:
            os.write = real_write
        records = parse((run_dir / FILE).read_bytes()).records if (run_dir / FILE).exists() else []
        keys = {r.data["key"] for r in records if r.ev == Event.SUBMIT_INTENT}
        assert {job.key for job in service.jobs.values()} <= keys  # no charge without intent
        result = anyio.run(execute, m, run_dir, RunOptions(registry=registry))
        assert all(
            r.state in (ShotState.DONE, ShotState.NEEDS_RECONCILE)
            for r in result.state.shots.values()
        )
        assert max(Counter(service.ledger).values()) == 1  # 0 duplicate charges
