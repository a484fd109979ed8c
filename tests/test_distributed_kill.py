"""kill -9 of workers at random moments: the others finish its shots, nothing is paid twice,
every video is the provider's bytes, and a submit that was in the air ends ``needs_reconcile``.

The provider (the RelayDance simulator, its own process) is the witness: its ledger has every
charge and ``/_sim/account`` its own count of jobs in flight.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import dist_env
from tests.conftest import S3
from tests.test_distributed_run import _fetched_urls, _provider_sha, _store_sha


def _kill_cycles(
    tmp_path: Path, pg_database: str, s3: S3, *, cycles: int, shots: int, low: float, high: float
) -> None:
    rng = random.Random(int(os.environ.get("KILL_SEED", "0")) or None)
    with dist_env.provider(low, high) as prov:
        env = dist_env.env(prov, {"TMPDIR": str(tmp_path)})
        runs = []
        for name in ("north", "south"):
            m = dist_env.manifest(
                tmp_path / f"{name}.yaml", name, shots, storage=s3.storage_yaml(name)
            )
            run = dist_env.cli(
                "run", str(m), "--store", pg_database, "--no-work", "--trust-endpoints",
                environ=env,
            )  # fmt: skip
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            runs.append(name)
        workers = [dist_env.cli("worker", "--store", pg_database, environ=env) for _ in range(3)]
        killed: list[subprocess.Popen[str]] = []
        try:
            for _ in range(cycles):
                time.sleep(rng.uniform(0.3, 2.0))
                victim = rng.choice(workers)
                victim.send_signal(signal.SIGKILL)
                victim.communicate(timeout=30)
                killed.append(victim)
                workers.remove(victim)
                workers.append(dist_env.cli("worker", "--store", pg_database, environ=env))
            states = dist_env.wait_finished(pg_database, runs, 240)
        finally:
            for w in workers:
                dist_env.stop(w)
        account, ledger = prov.account(), prov.ledger()
        fetched = _fetched_urls(pg_database)
        provider_sha = {job: _provider_sha(prov, job) for job, _, _ in fetched.values()}
    assert all(k.returncode == -signal.SIGKILL for k in killed)

    # nothing paid twice: one charge at most per shot (its prompt), by the provider's ledger
    paid = Counter(s["prompt"] for s in account["submits"])
    assert max(paid.values()) == 1, paid.most_common(3)
    assert len(ledger) == len(paid)
    assert account["max_in_flight"] <= 4
    finals = Counter(r.state.value for s in states.values() for r in s.shots.values())
    print(f"{cycles} kills: {dict(finals)}")  # shown with -s: how many submits were in the air
    assert set(finals) <= {"done", "needs_reconcile"}, finals
    assert sum(finals.values()) == 2 * shots
    # every video in the store is the provider's bytes
    assert len(fetched) == finals["done"]
    for shot, (job_id, url, sha) in fetched.items():
        assert _store_sha(s3, url) == sha == provider_sha[job_id], shot
    # a shot that needs reconciling had its submit in the air when its worker died
    from pipeline.journal.pgjournal import PgJournal

    with PgJournal(pg_database) as journal:
        ambiguous = journal.query(
            "SELECT run_id || '/' || shot FROM pipeline.submits WHERE outcome = 'ambiguous'"
        )
    in_air = {f"{run}/{rec.id}" for run, s in states.items() for rec in s.shots.values()
              if rec.state.value == "needs_reconcile"}  # fmt: skip
    assert in_air == {row[0] for row in ambiguous}
    for name, st in states.items():
        for rec in st.shots.values():
            if rec.state.value == "needs_reconcile":
                assert rec.error is not None
                assert "in the air" in rec.error, (name, rec.id, rec.error)


@pytest.mark.slow
def test_kill_dash_nine_three_cycles(tmp_path: Path, pg_database: str, s3: S3) -> None:
    _kill_cycles(tmp_path, pg_database, s3, cycles=3, shots=10, low=0.3, high=0.8)


@pytest.mark.slow
def test_kill_dash_nine_twenty_cycles(tmp_path: Path, pg_database: str, s3: S3) -> None:
    _kill_cycles(tmp_path, pg_database, s3, cycles=20, shots=45, low=0.4, high=1.2)


def test_a_submit_in_the_air_when_its_worker_dies_needs_reconcile(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    """Killed after the intent was committed and before the provider answered: the provider
    creates (and charges) the job anyway; the worker that recovers the shot never submits it
    again: the shot ends ``needs_reconcile`` and the run's budget keeps counting it."""
    from pipeline.journal.pgjournal import PgJournal

    with dist_env.provider(0.3, 0.3, submit_delay=4.0) as prov:
        env = dist_env.env(prov, {"TMPDIR": str(tmp_path)})
        m = dist_env.manifest(tmp_path / "air.yaml", "air", 1, storage=s3.storage_yaml("air"))
        first = dist_env.cli("worker", "--store", pg_database, environ=env)
        run = dist_env.cli(
            "run", str(m), "--store", pg_database, "--no-work", "--trust-endpoints", environ=env
        )
        assert run.communicate(timeout=120)[0].startswith("run air started")
        with PgJournal(pg_database) as journal:
            deadline = time.monotonic() + 60
            while not any(r.ev == "submit_intent" for r in journal.records("air")):
                assert time.monotonic() < deadline, "no submit intent in 60 s"
                time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # the submit is in the air for 4 s more
        first.communicate(timeout=30)
        second = dist_env.cli("worker", "--store", pg_database, environ=env)
        try:
            states = dist_env.wait_finished(pg_database, ["air"], 90)
            time.sleep(4.5)  # the provider finishes the submit it had received
        finally:
            dist_env.stop(second)
        ledger = prov.ledger()
    rec = states["air"].shots["sc-s000"]
    assert rec.state.value == "needs_reconcile"
    assert rec.error is not None
    assert "in the air" in rec.error
    assert len(ledger) == 1  # the provider charged it once; nobody sent it again
