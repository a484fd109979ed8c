"""The run journal in PostgreSQL (pipeline.journal.pgjournal), on a real server.

Every test has a database of its own (``pg_database``). What is checked: the schema is made
idempotently even by many processes at once; ``seq`` strictly increases per run with no gaps
under concurrent appenders on different connections; an append inside the caller's transaction
commits or rolls back with it; records stream in order across read batches; a run folded from
Postgres equals the same records folded from a JSONL checkpoint; damaged rows and bad URLs give
clear errors that name the run and seq, or the store without its password.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import CheckpointError, UsageError
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.pgjournal import PgJournal, StoreDamaged, StoreError
from pipeline.journal.state import replay
from pipeline.models import Event, ShotState
from pipeline.outputs.summary import status_json
from tests.local_runs import finished_run, two_shot_manifest
from tests.pgserver import PgServer

MANIFEST = two_shot_manifest("folded")


_OPEN: list[PgJournal] = []


@pytest.fixture(autouse=True)
def _close_journals() -> Iterator[None]:
    """Every journal a test opened is closed after it (psycopg warns of a dropped connection)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def opened(dsn: str) -> PgJournal:
    j = PgJournal(dsn)
    _OPEN.append(j)
    return j


def journal(dsn: str, run: str = "r1") -> PgJournal:
    j = opened(dsn)
    j.ensure_schema()
    j.create_run(run, manifest_name="m", manifest_text="version: 1\n", budget_usd=None)
    return j


def test_round_trip_create_join_append_and_read(pg_database: str) -> None:
    with PgJournal(pg_database) as j:
        assert j.runs() == []  # no tables yet: no runs, no error
        assert j.run_info("r1") is None
        j.ensure_schema()
        j.ensure_schema()  # idempotent
        assert j.create_run("r1", manifest_name="m", manifest_text="x: 1\n", budget_usd=12.5)
        assert not j.create_run("r1", manifest_name="other", manifest_text="", budget_usd=None)
        info = j.run_info("r1")
        assert info is not None
        assert (info.manifest_name, info.manifest_text, info.budget_usd) == ("m", "x: 1\n", 12.5)
        assert info.created.tzinfo is not None
        first = j.append("r1", Event.RUN_STARTED, None, {"run": "r1", "manifest": "m.yaml"})
        second = j.append("r1", Event.SUBMIT_INTENT, "one-a", {"att": 1, "key": "k", "x": None})
        assert (first.seq, second.seq) == (1, 2)
        assert dict(second.data) == {"att": 1, "key": "k"}  # None fields are left out
        got = list(j.records("r1"))
        assert got == [first, second]
        assert list(j.records("r1", after_seq=1)) == [second]
        assert j.run_info("r1").last_seq == 2  # type: ignore[union-attr]
        assert [r.run_id for r in j.runs()] == ["r1"]
        assert j.state("r1").shots["one-a"].state is ShotState.SUBMITTING


def test_bad_fields_and_unknown_runs_are_refused(pg_database: str) -> None:
    j = journal(pg_database)
    with pytest.raises(ValueError, match="reserved"):
        j.append("r1", Event.STATUS, "s", {"seq": 3})
    with pytest.raises(ValueError, match="JSON"):
        j.append("r1", Event.STATUS, "s", {"x": object()})
    with pytest.raises(StoreDamaged, match="no run 'nope'"):
        j.append("nope", Event.STATUS, "s", {})
    with pytest.raises(UsageError, match=r"has no run 'nope' \(runs: r1\)"):
        j.state("nope")
    with pytest.raises(UsageError, match=re.escape("run id '../x' is not allowed")):
        j.create_run("../x", manifest_name="m", manifest_text="", budget_usd=None)
    assert list(j.records("r1")) == []  # nothing half-written


def _ensure(dsn: str) -> None:
    with PgJournal(dsn) as j:
        j.ensure_schema()


def test_schema_creation_is_safe_from_many_processes_at_once(pg_database: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_ensure, [pg_database] * 8)
    assert opened(pg_database).runs() == []


def test_concurrent_appenders_get_strictly_increasing_gapless_seqs(pg_database: str) -> None:
    journal(pg_database)
    seen: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def appender(n: int) -> None:
        try:
            with PgJournal(pg_database) as mine:  # a connection of its own
                seen[n] = [
                    mine.append("r1", Event.STATUS, f"s{n}", {"i": i}).seq for i in range(150)
                ]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for seqs in seen.values():
        assert seqs == sorted(seqs)  # each appender's own records in its order
    all_seqs = sorted(s for seqs in seen.values() for s in seqs)
    assert all_seqs == list(range(1, 601))
    rows = list(opened(pg_database).records("r1"))
    assert [r.seq for r in rows] == all_seqs
    for n in range(4):  # the data of each row is the one its appender wrote
        assert [r.data["i"] for r in rows if r.shot == f"s{n}"] == list(range(150))


def test_append_in_the_callers_transaction_commits_or_rolls_back_with_it(
    pg_database: str,
) -> None:
    j = journal(pg_database)
    with j.connect() as conn:

        def charge_fails() -> None:
            with conn.transaction():
                j.append("r1", Event.SUBMIT_INTENT, "s", {"att": 1}, conn=conn)
                raise RuntimeError("the caller's budget charge failed")

        with pytest.raises(RuntimeError):
            charge_fails()
        assert list(j.records("r1")) == []
        with conn.transaction():
            rec = j.append("r1", Event.SUBMIT_INTENT, "s", {"att": 1}, conn=conn)
            conn.execute("SELECT 1")
    assert rec.seq == 1  # the rolled-back append took no seq
    assert [r.seq for r in j.records("r1")] == [1]


def test_records_stream_in_order_across_read_batches(pg_database: str) -> None:
    j = journal(pg_database)
    last = j.append_many("r1", ((Event.STATUS, f"s{i % 7}", {"i": i}) for i in range(12_001)))
    assert last == 12_001
    seqs = [r.seq for r in j.records("r1")]
    assert seqs == list(range(1, 12_002))
    assert [r.data["i"] for r in j.records("r1", after_seq=11_990)] == list(range(11_990, 12_001))
    assert j.append("r1", Event.STATUS, "s", {}).seq == 12_002


def test_a_run_folded_from_postgres_equals_its_jsonl_checkpoint(
    pg_database: str, tmp_path: Path
) -> None:
    run = finished_run(tmp_path, MANIFEST, "folded")
    records = load(run.run_dir / FILE, repair=False).records
    evs = {r.ev for r in records}
    assert {Event.RUN_STARTED, Event.SUBMIT_INTENT, Event.SUBMITTED, Event.FETCHED} <= evs
    j = journal(pg_database, "folded-1")
    assert j.import_records("folded-1", records) == len(records)
    from_pg = j.state("folded-1")
    from_jsonl = replay(records)
    assert from_pg == from_jsonl
    assert from_pg.shots["one-a"].state is ShotState.DONE
    as_json = status_json("folded", from_pg)
    assert as_json == status_json("folded", from_jsonl)
    assert as_json["counts"]["done"] == 3


def test_review_records_fold_the_same_from_both_backends(pg_database: str) -> None:
    j = journal(pg_database)
    items: list[tuple[Event, str | None, dict[str, object]]] = [
        (Event.RUN_STARTED, None, {"run": "r1", "manifest": "m.yaml", "simulate": True}),
        (Event.SHOT_PLANNED, "one-b-t1", {"fp": "f1", "prov": "local", "model": "previz"}),
        (Event.SUBMIT_INTENT, "one-b-t1", {"att": 1, "key": "r1:one-b-t1:1", "est_usd": 0.5}),
        (Event.SUBMITTED, "one-b-t1", {"job": "j1", "prov": "local", "cost_usd": 0.5}),
        (Event.TAKE_PICKED, "one-b-t1", {"key": "one-b", "take": 1}),
        (Event.NOTE_ADDED, "one-b-t1", {"key": "one-b", "take": 1, "text": "more fog"}),
        (Event.SUBMIT_AMBIGUOUS, "one-c", {"reason": "timeout"}),
    ]
    j.append_many("r1", items)
    records = list(j.records("r1"))
    state = j.state("r1")
    assert state == replay(records)
    assert state.picks == {"one-b": 1}
    assert state.review["one-b-t1"]["notes"][0]["text"] == "more fog"
    assert state.shots["one-c"].state is ShotState.NEEDS_RECONCILE
    assert state.simulated is True


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("UPDATE pipeline.events SET ev = 'teleported' WHERE seq = 2", "seq 2: unknown event"),
        ("UPDATE pipeline.events SET data = '[1, 2]' WHERE seq = 2", "seq 2 (submitted): its data"),
        ("UPDATE pipeline.events SET data = '{}' WHERE seq = 2", "seq 2 (submitted): a record"),
    ],
)
def test_a_damaged_store_names_the_run_and_the_seq(
    pg_database: str, pg_server: PgServer, sql: str, says: str
) -> None:
    j = journal(pg_database, "damaged")
    j.append("damaged", Event.SUBMIT_INTENT, "s", {"att": 1})
    j.append("damaged", Event.SUBMITTED, "s", {"job": "j1"})
    pg_server.psql(sql, pg_database.rsplit("/", 1)[1])
    with pytest.raises(StoreDamaged, match=re.escape(f"run damaged, {says}")) as err:
        j.state("damaged")
    assert isinstance(err.value, CheckpointError)  # exit 3: fail-stop


def test_tables_of_a_newer_pipeline_are_refused(pg_database: str, pg_server: PgServer) -> None:
    journal(pg_database)
    pg_server.psql(
        "UPDATE pipeline.meta SET value = '2' WHERE key = 'schema_version'",
        pg_database.rsplit("/", 1)[1],
    )
    with pytest.raises(CheckpointError, match="newer pipeline"):
        opened(pg_database).ensure_schema()


def test_bad_urls_and_unreachable_servers_name_the_store_but_never_the_password() -> None:
    with pytest.raises(StoreError, match="is not a PostgreSQL URL") as bad:
        opened("mysql://me:hunter2secret@db/x").runs()
    assert "hunter2secret" not in str(bad.value)
    with pytest.raises(StoreError, match="names no host or no database"):
        opened("postgresql://me@db.example").runs()
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://me:hunter2secret@127.0.0.1:{port}/films?password=hunter2secret"
    with pytest.raises(StoreError) as down:
        opened(url).runs()
    text = str(down.value)
    assert f"cannot connect to the store postgresql://me@127.0.0.1:{port}/films" in text
    assert "hunter2secret" not in text
    assert down.value.__cause__ is None  # no chained libpq text in a traceback either


def test_a_server_that_went_away_is_reconnected(pg_database: str, pg_server: PgServer) -> None:
    j = journal(pg_database)
    j.append("r1", Event.STATUS, "s", {})
    db = pg_database.rsplit("/", 1)[1]
    pg_server.psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
        "AND pid <> pg_backend_pid()"
    )
    with pytest.raises(StoreError, match="failed"):
        j.append("r1", Event.STATUS, "s", {})  # the broken connection: outcome unknown
    assert j.append("r1", Event.STATUS, "s", {}).seq == 2  # a new connection
