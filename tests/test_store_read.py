"""Reading a run of the store: ``pipeline status --store URL RUN`` and ``plan --store``.

A real local run's checkpoint is copied into a real PostgreSQL store (``pg_database``), so the
store's answers can be compared with the local commands' on the same records: one fold, one
table, one JSON. Errors (unknown run, bad or unreachable store, damaged rows) exit with the
documented codes and never show the store's password.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.pgjournal import PgJournal
from tests.local_runs import Run, finished_run, two_shot_manifest
from tests.pgserver import PgServer

MANIFEST = two_shot_manifest("harbor")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return finished_run(tmp_path_factory.mktemp("store-read"), MANIFEST, "harbor")


@pytest.fixture
def store(pg_database: str, local_run: Run) -> Iterator[PgJournal]:
    """The store with run ``harbor-1``: the local run's records, copied."""
    with PgJournal(pg_database) as j:
        j.ensure_schema()
        j.create_run("harbor-1", manifest_name="harbor", manifest_text=MANIFEST, budget_usd=None)
        j.import_records("harbor-1", load(local_run.run_dir / FILE, repair=False).records)
        yield j


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_from_the_store_equals_the_local_one(
    store: PgJournal, pg_database: str, local_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "status", "--store", pg_database, "harbor-1", "--json")
    local_code, local_out, _ = cli(capsys, "status", str(local_run.run_dir), "--json")
    assert code == local_code == 0
    remote, local = json.loads(out), json.loads(local_out)
    assert remote.pop("store") == pg_database  # no password in it: there is none here
    assert remote.pop("queues") == []  # no DBOS tables in this store
    assert remote.pop("run") == "harbor-1"
    local.pop("run")
    assert remote == local
    assert remote["counts"]["done"] == 3


def test_status_table_from_the_store_equals_the_local_one(
    store: PgJournal, pg_database: str, local_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = cli(capsys, "status", "--store", pg_database, "harbor-1")
    _, local_out, _ = cli(capsys, "status", str(local_run.run_dir))
    assert out == local_out
    assert "done: 3" in out


def test_the_store_variable_is_used_unless_the_argument_is_a_local_directory(
    store: PgJournal,
    pg_database: str,
    local_run: Run,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_STORE", pg_database)
    code, out, _ = cli(capsys, "status", "harbor-1", "--json")
    assert code == 0
    assert json.loads(out)["store"] == pg_database
    code, out, _ = cli(capsys, "status", str(local_run.run_dir), "--json")
    assert code == 0
    assert "store" not in json.loads(out)  # the embedded mode, as before
    code, _, err = cli(capsys, "status", "jobs/harbor-1")  # a path: local, and not there
    assert code == 2
    assert "jobs/harbor-1 does not exist" in err


def test_status_shows_the_account_queues_of_the_runs_providers(
    store: PgJournal,
    pg_database: str,
    pg_server: PgServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = pg_database.rsplit("/", 1)[1]
    pg_server.psql(  # DBOS's table, with the columns the counts read
        "CREATE SCHEMA dbos; CREATE TABLE dbos.workflow_status (workflow_uuid text primary key, "
        "status text, queue_name text); INSERT INTO dbos.workflow_status VALUES "
        "('w1', 'PENDING', 'local.default'), ('w2', 'PENDING', 'local.default'), "
        "('w3', 'ENQUEUED', 'local.default'), ('w4', 'SUCCESS', 'local.default'), "
        "('w5', 'PENDING', 'venice.default'), ('w6', 'PENDING', NULL)",
        db,
    )
    code, out, _ = cli(capsys, "status", "--store", pg_database, "harbor-1")
    assert code == 0
    assert out.rstrip().endswith("queue local.default: 2 in flight, 1 queued")
    assert "venice" not in out  # another provider's queue is not this run's
    _, out, _ = cli(capsys, "status", "--store", pg_database, "harbor-1", "--json")
    assert json.loads(out)["queues"] == [{"queue": "local.default", "in_flight": 2, "queued": 1}]


def test_an_unknown_run_is_exit_2_naming_the_runs(
    store: PgJournal, pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "status", "--store", pg_database, "nope")
    assert code == 2
    assert out == ""
    assert "has no run 'nope' (runs: harbor-1)" in err
    code, _, err = cli(capsys, "status", "--store", pg_database, "../etc")
    assert code == 2
    assert "run id '../etc' is not allowed" in err


def test_a_damaged_store_is_exit_3_naming_run_and_seq(
    store: PgJournal, pg_database: str, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = pg_database.rsplit("/", 1)[1]
    pg_server.psql("UPDATE pipeline.events SET ev = 'warp' WHERE seq = 3", db)
    code, _, err = cli(capsys, "status", "--store", pg_database, "harbor-1")
    assert code == 3
    assert "run harbor-1, seq 3: unknown event 'warp'" in err


def test_bad_or_unreachable_stores_are_exit_2_and_never_show_the_password(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://editor:s3cr3t-Pa55@127.0.0.1:{port}/films"
    code, out, err = cli(capsys, "status", "--store", url, "harbor-1", "--json")
    assert code == 2
    assert f"cannot connect to the store postgresql://editor@127.0.0.1:{port}/films" in err
    code2, out2, err2 = cli(capsys, "pull", "harbor-1", "--store", "mysql://editor:s3cr3t-Pa55@h/x")
    assert code2 == 2
    assert "is not a PostgreSQL URL" in err2
    every = out + err + out2 + err2 + caplog.text
    assert "s3cr3t-Pa55" not in every


def test_a_password_in_a_working_url_is_never_shown(
    store: PgJournal, pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with_password = pg_database.replace("postgres@", "postgres:Wh1sper-77@")
    code, out, err = cli(capsys, "status", "--store", with_password, "harbor-1", "--json")
    assert code == 0
    assert json.loads(out)["store"] == pg_database  # named without it
    code, out2, err2 = cli(capsys, "status", "--store", with_password, "nope")
    assert code == 2
    assert "Wh1sper-77" not in out + err + out2 + err2


def test_pull_without_a_store_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "pull", "harbor-1")
    assert code == 2
    assert "--store URL or PIPELINE_STORE" in err


def test_plan_compares_the_manifest_with_the_stores_run(
    store: PgJournal, pg_database: str, local_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = str(local_run.manifest.path)
    jobs = str(local_run.run_dir.parent)
    code, out, err = cli(capsys, "plan", manifest, "--store", pg_database, "--json")
    assert code == 0
    assert "compared with run harbor-1" in err
    _, local_out, _ = cli(capsys, "plan", manifest, "--jobs-dir", jobs, "--json")
    remote = json.loads(out)
    assert remote == json.loads(local_out)
    assert {s["status"] for s in remote["shots"]} == {"done"}


def test_plan_against_a_store_without_the_run_plans_everything_new(
    pg_database: str, local_run: Run, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with PgJournal(pg_database) as j:
        j.ensure_schema()
    code, out, err = cli(
        capsys, "plan", str(local_run.manifest.path), "--store", pg_database, "--json"
    )
    assert code == 0
    assert "no run of it in the store" in err
    assert {s["status"] for s in json.loads(out)["shots"]} == {"new"}


def test_review_of_a_store_run_sends_its_verdicts_to_the_store(
    store: PgJournal, pg_database: str, local_run: Run, tmp_path: Path
) -> None:
    into = tmp_path / "reviewed"
    into.mkdir()
    shutil.copy(local_run.run_dir.parent.parent / "pier.png", into)  # its media, beside it
    review = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "review", "harbor-1", "--store", pg_database,
         "--into", str(into), "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert review.stdout is not None
        lines = iter(review.stdout.readline, "")  # the pull's summary, then the page's URL
        url = next((m[1] for ln in lines if (m := re.match(r"review: (http://\S+)", ln))), None)
        assert url is not None, review.communicate(timeout=60)[1]
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        [token] = re.findall(r'<meta name="review-token" content="([^"]+)">', page)
        note = {"shot": "one-b-t2", "text": "warmer, from the studio"}
        req = urllib.request.Request(
            url.rstrip("/") + "/api/note",
            data=json.dumps(note).encode(),
            headers={"X-Review-Token": token, "Content-Type": "application/json"},
            method="POST",
        )
        assert json.loads(urllib.request.urlopen(req, timeout=30).read())["recorded"] is True
    finally:
        review.send_signal(signal.SIGINT)
        _, err = review.communicate(timeout=60)
    assert review.returncode == 0, err
    # The note is in the store (sent when the review ended), once, and in the local copy.
    notes = [r for r in store.records("harbor-1") if r.ev == "note_added"]
    assert [(r.shot, r.data["text"]) for r in notes] == [("one-b-t2", "warmer, from the studio")]
    local = [r for r in load(into / FILE, repair=False).records if r.ev == "note_added"]
    assert len(local) == 1
