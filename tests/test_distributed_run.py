"""The distributed mode end to end: real PostgreSQL, the RelayDance simulator in its own process,
object storage on moto, and the real CLI in worker processes (``pipeline worker``) and runs
(``pipeline run --store``).

What the provider saw is read from the simulator itself (``/_sim/account``: its own count of
jobs in flight, every submit's time; ``/_sim/ledger``: every charge), not from the workers.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import boto3
import psycopg
import pytest

from tests import dist_env
from tests.conftest import S3

pytestmark = pytest.mark.usefixtures("s3")


def _store_sha(s3: S3, url: str) -> str:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _provider_sha(prov: dist_env.Provider, job_id: str) -> str:
    req = urllib.request.Request(
        f"{prov.base_url}/videos/{job_id}/content",
        headers={"Authorization": f"Bearer {dist_env.KEY}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return hashlib.sha256(resp.read()).hexdigest()


@pytest.mark.slow
def test_three_workers_two_manifests_share_one_account(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    with dist_env.provider(0.4, 0.9) as prov:
        env = dist_env.env(prov)
        workers = [dist_env.cli("worker", "--store", pg_database, environ=env) for _ in range(3)]
        try:
            for name in ("alpha", "beta"):  # two manifests, one account (`team`), limit 4
                m = dist_env.manifest(
                    tmp_path / f"{name}.yaml", name, 10, storage=s3.storage_yaml(name), rpm=600
                )
                code, out, err = dist_env.run(m, pg_database, env, "--no-work")
                assert code == 0, err
                assert f"run {name} started: 10 shot(s) on relaydance.team" in out
            states = dist_env.wait_finished(pg_database, ["alpha", "beta"], 120)
        finally:
            outputs = [dist_env.stop(w) for w in workers]
        for w, (_, err) in zip(workers, outputs, strict=True):
            assert w.returncode == 0, err
        account = prov.account()
        ledger = prov.ledger()
        fetched = _fetched_urls(pg_database)
        provider_sha = {job: _provider_sha(prov, job) for job, _, _ in fetched.values()}

    assert 1 < account["max_in_flight"] <= 4  # the provider's own count, all processes together
    for state in states.values():
        assert {r.state.value for r in state.shots.values()} == {"done"}
        for rec in state.shots.values():
            assert rec.job is not None
            assert rec.output == f"shots/{rec.id}.mp4"
    prompts = Counter(s["prompt"] for s in account["submits"])
    assert len(prompts) == 20  # every shot paid ...
    assert set(prompts.values()) == {1}  # ... exactly once
    assert len(ledger) == 20
    # every output in the object store is the provider's bytes
    assert len(fetched) == 20
    for shot, (job_id, url, sha) in fetched.items():
        assert _store_sha(s3, url) == sha == provider_sha[job_id], shot


def _fetched_urls(dsn: str) -> dict[str, tuple[str, str, str]]:
    """``{run/shot: (job id, object URL, sha256)}`` from the store's journal."""
    from pipeline.journal.pgjournal import PgJournal

    out: dict[str, tuple[str, str, str]] = {}
    with PgJournal(dsn) as journal:
        for run in journal.runs():
            jobs: dict[str, str] = {}
            for r in journal.records(run.run_id):
                if r.ev == "submitted" and r.shot:
                    jobs[r.shot] = r.data["job"]
                if r.ev == "fetched" and r.shot:
                    out[f"{run.run_id}/{r.shot}"] = (jobs[r.shot], r.data["url"], r.data["sha256"])
    return out


def test_budget_is_shared_by_the_workers_of_a_run(tmp_path: Path, pg_database: str, s3: S3) -> None:
    with dist_env.provider(0.3, 0.5) as prov:
        env = dist_env.env(prov)
        m = dist_env.manifest(
            tmp_path / "money.yaml", "money", 8, storage=s3.storage_yaml("money"),
            budget=5.0, usd_per_job=1.0,
        )  # fmt: skip
        worker = dist_env.cli("worker", "--store", pg_database, environ=env)
        try:  # the run's own process works too: two workers check one budget
            code, out, err = dist_env.run(m, pg_database, env)
        finally:
            dist_env.stop(worker)
        ledger = prov.ledger()
    assert code == 1, err  # held shots need attention
    assert "5 done" in out
    assert "3 pending" in out
    assert len(ledger) == 5  # never more than the budget: $5 at $1 a shot


def test_a_finished_job_hands_its_account_slot_back_before_its_download(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    # One slot, jobs of about 0.3 s, downloads held 3 s: the next shot is submitted while the
    # previous video is still downloading, never after it (the slot is the provider's job).
    with dist_env.provider(0.3, 0.35, fetch_delay=3.0) as prov:
        env = dist_env.env(prov)
        m = dist_env.manifest(
            tmp_path / "slot.yaml", "slot", 3, storage=s3.storage_yaml("slot"), max_in_flight=1
        )
        code, out, err = dist_env.run(m, pg_database, env)
        account = prov.account()
    assert code == 0, err
    assert "3 done" in out
    assert account["max_in_flight"] == 1
    from pipeline.journal.pgjournal import PgJournal

    [run_id] = re.findall(r"^run (\S+): 3 done$", out, re.M)
    with PgJournal(pg_database) as journal:
        wanted = ("submitted", "fetched")
        order = [(r.ev, r.shot) for r in journal.records(run_id) if r.ev in wanted]
    first_fetched = next(i for i, (ev, _) in enumerate(order) if ev == "fetched")
    submitted_before = [shot for ev, shot in order[:first_fetched] if ev == "submitted"]
    assert len(submitted_before) >= 2, order


def test_a_refused_submit_goes_back_through_the_accounts_queue(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    # Every 3rd submit is answered 429 (nothing created). Each retry is a new shot workflow on
    # the account's queue, so every submit request the provider saw had its own start there
    # (what DBOS's limiter and concurrency count), and every shot is paid once.
    with dist_env.provider(0.2, 0.3, refuse_every=3) as prov:
        env = dist_env.env(prov)
        m = dist_env.manifest(
            tmp_path / "busy.yaml", "busy", 6, storage=s3.storage_yaml("busy"), max_in_flight=2
        )
        code, out, err = dist_env.run(m, pg_database, env)
        refused = prov.get("/_test/refused")
        ledger = prov.ledger()
    assert code == 0, err
    assert "6 done" in out
    assert len(refused) >= 2  # 8+ submit requests for 6 shots: at least 2 were refused
    assert len(ledger) == 6  # 6 shots done, 6 charges: each paid exactly once
    with psycopg.connect(pg_database) as conn:
        [(starts,)] = conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = 'relaydance.team' "
            "AND name = 'pipeline.shot'"
        ).fetchall()
    assert starts == len(ledger) + len(refused)


def test_the_executors_share_the_accounts_poll_rate(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    # polls_per_minute: 60 for the account, two executors (a worker and the run's process):
    # each spaces its polls 2 s apart, so no 10 s holds more than 10 polls (+1 each: a limiter
    # starts full; one made when a process's count of executors changes starts spent). Six jobs
    # polled every 0.2-0.5 s would ask for about 100.
    with dist_env.provider(2.0, 3.0) as prov:
        env = dist_env.env(prov)
        m = dist_env.manifest(
            tmp_path / "polls.yaml", "polls", 6, storage=s3.storage_yaml("polls"),
            max_in_flight=6, ppm=60,
        )  # fmt: skip
        worker = dist_env.cli("worker", "--store", pg_database, environ=env)
        try:
            code, out, err = dist_env.run(m, pg_database, env)
        finally:
            dist_env.stop(worker)
        polls = sorted(prov.get("/_test/polls"))
    assert code == 0, err
    assert "6 done" in out
    worst = max(sum(1 for p in polls if t <= p < t + 10) for t in polls)
    assert worst <= 12, worst


def test_a_manifest_that_changes_an_accounts_limits_says_so(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    with dist_env.provider(0.3, 0.4) as prov:
        env = dist_env.env(prov)
        errs = []
        for name, slots in (("first", 4), ("second", 4), ("third", 2)):
            m = dist_env.manifest(
                tmp_path / f"{name}.yaml", name, 1, storage=s3.storage_yaml(name),
                max_in_flight=slots,
            )  # fmt: skip
            code, _, err = dist_env.run(m, pg_database, env, "--no-work")
            assert code == 0, err
            errs.append(err)
    assert "queue relaydance" not in errs[0] + errs[1]  # a new queue, then the same limits
    assert "queue relaydance.team: max_in_flight 4 -> 2 for every run on this account" in errs[2]


def test_a_bad_store_is_refused_without_its_password(tmp_path: Path) -> None:
    m = dist_env.manifest(tmp_path / "m.yaml", "m", 1, storage="storage: {url: 's3://bkt/x'}")
    secret = "hunter2-secret"
    for argv in (
        ["run", str(m), "--store", f"postgresql://u:{secret}@127.0.0.1:1/db"],
        ["worker", "--store", f"postgresql://u:{secret}@127.0.0.1:1/db"],
        ["worker", "--store", f"mysql://u:{secret}@h/db"],
    ):
        proc = dist_env.cli(*argv, environ=os.environ)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (argv, err)
        assert secret not in out + err
        assert ("postgresql://u@127.0.0.1:1/db" in err) or ("mysql://u@h/db" in err)


def test_the_embedded_mode_never_imports_dbos(tmp_path: Path) -> None:
    m = tmp_path / "local.yaml"
    m.write_text(
        "version: 1\nname: tiny\ndefaults: {provider: local, duration: 1}\n"
        "providers: {local: {latency_s: 0}}\nscenes: [{id: a, shots: [{id: s, prompt: p}]}]\n"
    )
    code = (
        "import sys; from pipeline.cli.main import main; "
        f"rc = main(['run', {str(m)!r}, '--jobs-dir', {str(tmp_path / 'jobs')!r}, "
        "'--no-progress']); "
        "bad = sorted(n for n in sys.modules if n == 'dbos' or n.startswith(('dbos.', "
        "'pipeline.distributed', 'psycopg'))); print(rc, bad); sys.exit(0 if rc == 0 and not bad "
        "else 1)"
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=dist_env.ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "jobs" / "tiny" / "shots" / "a-s.mp4").exists()


@pytest.mark.slow
def test_the_account_rate_holds_across_workers_and_manifests(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    """requests_per_minute 30 on one account, 36 shots from two manifests, three workers:
    no rolling minute of the provider's own submit log holds more than 30 submits."""
    from pipeline.distributed.queues import limiter_for

    rpm = 30
    with dist_env.provider(0.2, 0.4) as prov:
        env = dist_env.env(prov)
        workers = [dist_env.cli("worker", "--store", pg_database, environ=env) for _ in range(3)]
        try:
            for name in ("east", "west"):
                m = dist_env.manifest(
                    tmp_path / f"{name}.yaml", name, 18, storage=s3.storage_yaml(name), rpm=rpm
                )
                _, out, _ = dist_env.run(m, pg_database, env, "--no-work")
                assert out.startswith(f"run {name} started")
            states = dist_env.wait_finished(pg_database, ["east", "west"], 240)
        finally:
            for w in workers:
                dist_env.stop(w)
        submits = sorted(s["t"] for s in prov.account()["submits"])
    assert len(submits) == 36
    assert all(r.state.value == "done" for s in states.values() for r in s.shots.values())
    busiest = max(sum(1 for u in submits[i:] if u < t + 60.0) for i, t in enumerate(submits))
    assert busiest <= rpm
    limiter = limiter_for(rpm)
    assert limiter is not None
    assert busiest >= limiter["limit"] * (60 / limiter["period"]) - limiter["limit"]  # it binds


@pytest.mark.slow
def test_a_reroll_asked_on_a_pulled_run_is_submitted_by_the_next_run_of_the_store(
    tmp_path: Path, pg_database: str, s3: S3
) -> None:
    import anyio

    from pipeline.journal import inbox
    from pipeline.journal.pgjournal import PgJournal
    from pipeline.manifest.loader import load_manifest
    from pipeline.manifest.takes import resolver
    from pipeline.models import Event

    with dist_env.provider(0.3, 0.5) as prov:
        env = dist_env.env(prov)
        m = dist_env.manifest(tmp_path / "again.yaml", "again", 2, storage=s3.storage_yaml("rr"))
        code, out, err = dist_env.run(m, pg_database, env)
        assert code == 0, err
        [run_id] = re.findall(r"^run (\S+): 2 done$", out, re.M)
        with PgJournal(pg_database) as journal:
            first = sorted(journal.state(run_id).shots)
        dest = tmp_path / "pulled"

        def pull() -> str:
            proc = dist_env.cli(
                "pull", run_id, "--store", pg_database, "-o", str(dest), "--trust-endpoints",
                environ=env,
            )  # fmt: skip
            pulled, errors = proc.communicate(timeout=120)
            assert proc.returncode == 0, errors
            return pulled

        pull()
        # A reviewer asks for another take of the first shot in the pulled directory.
        ask = inbox.Request(Event.REROLL_REQUESTED, first[0], {"key": first[0], "take": 1})
        pulled_manifest = load_manifest(dest / "manifest.yaml")
        _, local = anyio.run(inbox.record, dest, [ask], resolver(pulled_manifest))
        [new_take] = list(local.rerolls)
        said = pull()  # sends it to the store
        assert f"re-roll(s) sent to the store: {new_take}" in said
        code, out, err = dist_env.run(m, pg_database, env)  # the same manifest, run again
        ledger = prov.ledger()
    assert code == 0, err
    assert "3 done" in out
    assert len(ledger) == 3  # the new take once; the first two were not paid again
    with PgJournal(pg_database) as journal:
        state = journal.state(run_id)
        submitted = Counter(r.shot for r in journal.records(run_id) if r.ev == "submitted")
    assert sorted(state.shots) == sorted([*first, new_take])
    assert state.shots[new_take].state.value == "done"
    assert submitted == {first[0]: 1, first[1]: 1, new_take: 1}
