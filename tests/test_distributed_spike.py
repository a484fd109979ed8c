"""The spike behind the distributed mode, kept as a test: DBOS queues hold a global concurrency
and a rate limit across OS processes (three workers, two "manifests" of jobs on one queue).

Each job counts itself in and out of a table in one transaction each (tests/dist_spike_worker.py),
so the peak of jobs running at once is the database's own count, not a worker's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parent.parent


def _worker(dsn: str, role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dist_spike_worker", dsn, role],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_queue_limits_hold_across_three_processes(pg_server: PgServer, pg_database: str) -> None:
    db = pg_database.rsplit("/", 1)[1]
    pg_server.psql(
        "CREATE SCHEMA spike; CREATE TABLE spike.state(cur int, peak int, done int);"
        "INSERT INTO spike.state VALUES (0, 0, 0);"
        "CREATE TABLE spike.starts(tag text, t timestamptz);"
        "CREATE TABLE spike.ends(tag text, t timestamptz)",
        db,
    )
    # The workers first, each dequeuing before any job exists: none gets a head start that
    # would let it take every job (on a loaded machine one start can lag the others by seconds).
    workers = [_worker(pg_database, "work:16") for _ in range(3)]
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline() == b"up\n", w.communicate(timeout=60)[1].decode()
    for prefix in ("a", "b"):  # two manifests' worth of jobs, one after the other
        enq = _worker(pg_database, f"enqueue:8:{prefix}")
        _, err = enq.communicate(timeout=120)
        assert enq.returncode == 0, err.decode()
    for w in workers:
        _, err = w.communicate(timeout=180)
        assert w.returncode == 0, err.decode()

    cur, peak, done = pg_server.psql("SELECT cur, peak, done FROM spike.state", db).split("|")
    assert (int(cur), int(done)) == (0, 16)
    assert int(peak) == 4  # the limit binds, and is never exceeded
    starts = [
        int(x) / 1000
        for x in pg_server.psql(
            "SELECT started_at_epoch_ms FROM dbos.workflow_status "
            "WHERE queue_name = 'spike.default' ORDER BY 1",
            db,
        ).split()
    ]
    assert len(starts) == 16
    # The limiter: at most 6 starts (DBOS's own claim times) in any rolling 2 s window.
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 2.0) <= 6, starts
    executors = pg_server.psql(
        "SELECT count(DISTINCT executor_id) FROM dbos.workflow_status WHERE queue_name = "
        "'spike.default'",
        db,
    )
    assert int(executors) >= 2  # the work really was shared between processes
    # Each worker ran at most 2 at once (tests/dist_spike_worker.py), so the peak of 4 above was
    # reached by two processes at once: the global limit held across them.
    rows = pg_server.psql(
        "SELECT w.executor_id, extract(epoch FROM s.t), extract(epoch FROM e.t) "
        "FROM dbos.workflow_status w JOIN spike.starts s ON s.tag = w.workflow_uuid "
        "JOIN spike.ends e ON e.tag = w.workflow_uuid WHERE w.queue_name = 'spike.default'",
        db,
    ).split()
    assert len(rows) == 16
    spans: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        executor, began, ended = row.split("|")
        spans.setdefault(executor, []).append((float(began), float(ended)))
    for mine in spans.values():
        assert max(sum(1 for b, e in mine if b <= t < e) for t, _ in mine) <= 2, mine
