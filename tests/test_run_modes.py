"""A rehearsal never spends: run modes are sealed; exit codes of the commands around a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.test_cli import checkpoint_events, cli, start, wait_for

ROOT = Path(__file__).resolve().parent.parent


class _Counting(BaseHTTPRequestHandler):
    """Answers every request 500 and counts it: a "real provider" that must never be called."""

    hits: ClassVar[list[str]] = []

    def _any(self) -> None:
        type(self).hits.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = do_PUT = _any

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def real_provider() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server standing in for a real provider; yields its URL and its hits."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1", hits
    finally:
        server.shutdown()
        server.server_close()


def _venice_manifest(path: Path, base_url: str | None, shots: int = 6) -> None:
    provider = f"providers:\n  venice: {{base_url: '{base_url}'}}\n" if base_url else ""
    lines = "".join(f"      - {{id: s{i}, prompt: 'harbor at dawn {i}'}}\n" for i in range(shots))
    path.write_text(
        "version: 1\nname: sealed\n"
        "defaults: {provider: venice, model: wan-2-7-text-to-video, duration: 5}\n"
        + provider
        + "scenes:\n  - id: a\n    shots:\n"
        + lines
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return {**env, **extra}


def test_a_killed_rehearsal_resumed_for_real_sends_nothing(
    tmp_path: Path, real_provider: tuple[str, list[str]]
) -> None:
    base_url, hits = real_provider
    _venice_manifest(tmp_path / "m.yaml", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "m.yaml", "--simulate", "--no-progress"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "jobs" / "sealed"
    try:
        wait_for(
            lambda: (
                (run_dir / "checkpoint.jsonl").exists()
                and any(e.get("ev") == "submitted" for e in checkpoint_events(run_dir))
            )
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    started = [e for e in checkpoint_events(run_dir) if e.get("ev") == "run_started"]
    assert started[0]["simulate"] is True
    before = (run_dir / "checkpoint.jsonl").read_bytes()

    # The user now points the manifest at the real service and sets a real key.
    _venice_manifest(tmp_path / "m.yaml", base_url)
    env = _env(VENICE_API_KEY="sk-real-key-1234567890")
    for args in (["resume", str(run_dir)], ["run", "m.yaml"], ["adopt", str(run_dir), "a-s0", "j"]):
        res = cli(*args, "--no-progress", "--trust-endpoints", cwd=tmp_path, env=env)
        assert res.returncode == 2, res.stderr
        assert "is a rehearsal (started with --simulate)" in res.stderr
        assert "--jobs-dir" in res.stderr
        assert "Traceback" not in res.stderr
    res = cli("cancel", str(run_dir), "--trust-endpoints", cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr
    assert hits == []  # not one request reached the "real" provider
    assert (run_dir / "checkpoint.jsonl").read_bytes() == before  # and nothing was written

    # With --simulate the rehearsal goes on, and says what it is everywhere.
    res = cli("resume", str(run_dir), "--simulate", "--no-progress", cwd=tmp_path, env=env)
    assert res.returncode in (0, 1), res.stderr  # the killed submits may need reconciling
    assert hits == []
    status = json.loads(cli("status", str(run_dir), "--json", cwd=tmp_path).stdout)
    assert status["simulated"] is True
    report = json.loads((run_dir / "report.json").read_text())
    assert report["simulated"] is True
    assert "rehearsal (--simulate)" in (run_dir / "storyboard.html").read_text()
    assert "rehearsal (--simulate)" in cli("status", str(run_dir), cwd=tmp_path).stdout


def test_a_real_run_is_never_continued_as_a_rehearsal(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nname: real\ndefaults: {provider: local, duration: 1}\n"
        "providers:\n  local: {latency_s: 0}\nscenes:\n  - id: a\n    shots:\n"
        "      - {id: s1, prompt: one}\n"
    )
    assert cli("run", "m.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "jobs" / "real"
    before = (run_dir / "checkpoint.jsonl").read_bytes()
    for args in (["resume", str(run_dir), "--simulate"], ["run", "m.yaml", "--simulate"]):
        res = cli(*args, "--no-progress", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert "is a real run" in res.stderr
    assert (run_dir / "checkpoint.jsonl").read_bytes() == before
    assert (
        json.loads(cli("status", str(run_dir), "--json", cwd=tmp_path).stdout)["simulated"] is False
    )


def test_run_directories_that_are_not_runs_are_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for args in (["status", "nope"], ["status", "empty"], ["resume", "nope"], ["cancel", "empty"]):
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert "nope does not exist" in cli("status", "nope", cwd=tmp_path).stderr
    assert "empty is not a run directory" in cli("status", "empty", cwd=tmp_path).stderr


def test_a_locked_run_directory_exits_4_naming_the_holder(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nname: locked\ndefaults: {provider: local, duration: 1}\n"
        "providers:\n  local: {latency_s: 30}\nscenes:\n  - id: a\n    shots:\n"
        "      - {id: s1, prompt: one}\n"
    )
    first = start("run", "m.yaml", "--no-progress", cwd=tmp_path)
    run_dir = tmp_path / "jobs" / "locked"
    try:
        wait_for(lambda: any(e.get("ev") == "submitted" for e in _events(run_dir)))
        res = cli("resume", str(run_dir), "--no-progress", cwd=tmp_path)
        assert res.returncode == 4, res.stderr
        assert f"another runner holds {run_dir} (pid {first.pid})" in res.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)


def _events(run_dir: Path) -> list[dict[str, object]]:
    return checkpoint_events(run_dir) if (run_dir / "checkpoint.jsonl").exists() else []


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    shots = "".join(f"      - {{id: s{i}, prompt: p{i}}}\n" for i in range(3))
    manifest.write_text(
        "version: 1\nname: pipe\ndefaults: {provider: local, duration: 1}\n"
        "providers:\n  local: {latency_s: 0}\nscenes:\n  - id: a\n    shots:\n" + shots
    )
    assert cli("run", "m.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    # `true` exits at once: stdout is closed before the first write.
    for pipe, lines in (("status jobs/pipe | head -2", 2), ("status jobs/pipe --json | true", 0)):
        res = subprocess.run(
            f"{sys.executable} -m pipeline {pipe}",
            shell=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert len(res.stdout.splitlines()) == lines
        assert res.stderr == ""


def test_help_gives_exit_codes_environment_and_examples() -> None:
    res = cli("--help", cwd=ROOT)
    assert res.returncode == 0
    for text in ("exit codes:", "VENICE_API_KEY", "AWS_ACCESS_KEY_ID", "examples:", "--simulate"):
        assert text in res.stdout
