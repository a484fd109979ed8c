"""Helpers of the distributed mode's tests: a RelayDance provider in its own process (with the
account view ``/_sim/account``), manifests on one account, and worker processes of the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "dist-test-key"


@dataclass
class Provider:
    """A provider process: ``origin`` (``http://127.0.0.1:PORT``) and the adapter's base URL."""

    proc: subprocess.Popen[str]
    origin: str
    base_url: str

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.origin + path, timeout=30) as resp:
            return json.loads(resp.read())

    def account(self) -> dict[str, Any]:
        """``{"in_flight", "max_in_flight", "submits": [{"t", "job_id", "prompt"}]}``."""
        out: dict[str, Any] = self.get("/_sim/account")
        return out

    def ledger(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.get("/_sim/ledger")
        return out


@contextmanager
def provider(
    low: float,
    high: float,
    submit_delay: float = 0.0,
    fetch_delay: float = 0.0,
    refuse_every: int = 0,
) -> Iterator[Provider]:
    """The RelayDance simulator in its own process, jobs of ``low``-``high`` seconds; each
    submit held ``submit_delay`` seconds before the job is created, each video download
    ``fetch_delay`` seconds before it is answered, every ``refuse_every``-th submit refused
    with 429 (``tests/dist_provider.py``).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.dist_provider", "--low", str(low), "--high",
         str(high), "--key", KEY, "--submit-delay", str(submit_delay),
         "--fetch-delay", str(fetch_delay), "--refuse-every", str(refuse_every)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield Provider(proc, ready["origin"], ready["base_url"])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def manifest(
    path: Path,
    name: str,
    shots: int,
    *,
    storage: str,
    max_in_flight: int = 4,
    rpm: float | None = None,
    budget: float | None = None,
    account: str = "team",
    usd_per_job: float | None = None,
    ppm: float | None = None,
) -> Path:
    """A manifest of ``shots`` RelayDance shots (4 s each) on ``account``.

    ``rpm`` and ``ppm`` (``polls_per_minute``) default to no practical limit.
    """
    limits = f"max_in_flight: {max_in_flight}, poll_min_s: 0.2, poll_max_s: 0.5, account: {account}"
    limits += f", requests_per_minute: {rpm if rpm is not None else 100000}"
    limits += f", polls_per_minute: {ppm if ppm is not None else 100000}"
    if usd_per_job is not None:
        limits += f", prices: {{doubao-seedance-2-0-720p: {{per_job_usd: {usd_per_job}}}}}"
    lines = [
        "version: 1",
        f"name: {name}",
        "defaults: {provider: relaydance, duration: 4, aspect_ratio: '16:9'}",
        f"providers:\n  relaydance: {{{limits}}}",
        "downloads: {allow_hosts: ['127.0.0.1']}",
        storage.rstrip("\n"),
    ]
    if budget is not None:
        lines.append(f"budget: {{max_usd: {budget}}}")
    lines.append("scenes:\n  - id: sc\n    shots:")
    lines += [f"      - {{id: s{i:03d}, prompt: '{name} shot {i}'}}" for i in range(shots)]
    path.write_text("\n".join(lines) + "\n")
    return path


def env(prov: Provider, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI process: the provider's base URL and key, AWS test keys."""
    out = dict(os.environ)
    out.update(
        {
            "PIPELINE_RELAYDANCE_BASE_URL": prov.base_url,
            "RELAYDANCE_API_KEY": KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    out.update(extra or {})
    return out


def run(
    manifest: Path, dsn: str, environ: Mapping[str, str], *extra: str, timeout_s: float = 180
) -> tuple[int, str, str]:
    """``pipeline run MANIFEST --store DSN --trust-endpoints EXTRA...`` to its end.

    Returns:
        ``(exit code, stdout, stderr)``.
    """
    proc = cli("run", str(manifest), "--store", dsn, "--trust-endpoints", *extra, environ=environ)
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def cli(*args: str, environ: Mapping[str, str], **kw: Any) -> subprocess.Popen[str]:
    """``python -m pipeline ARGS`` in its own process (stdout/stderr piped, text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT, env=dict(environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **kw,
    )  # fmt: skip


def wait_finished(dsn: str, runs: list[str], timeout_s: float) -> dict[str, Any]:
    """Poll the store until every run in ``runs`` has ``run_finished``; their states."""
    import time

    from pipeline.journal.pgjournal import PgJournal

    journal = PgJournal(dsn)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            states = {r: journal.state(r) for r in runs if journal.run_info(r) is not None}
            if len(states) == len(runs) and all(s.finished for s in states.values()):
                return states
            if time.monotonic() > deadline:
                summary = {
                    r: {k: v.state.value for k, v in s.shots.items()} for r, s in states.items()
                }
                raise AssertionError(f"runs not finished in {timeout_s} s: {summary}")
            time.sleep(0.3)
    finally:
        journal.close()


def stop(proc: subprocess.Popen[str], timeout_s: float = 90) -> tuple[str, str]:
    """SIGINT ``proc`` (a worker stops cleanly) and return its output."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout_s)
