"""A worker process for the DBOS spike (tests/test_distributed_spike.py): ``python -m
tests.dist_spike_worker DSN ROLE`` where ROLE is ``work`` (dequeue until every job is done) or
``enqueue:N:PREFIX`` (register the queue, enqueue N jobs, leave).

Each job counts itself in and out of ``spike.state`` in one transaction each, so the peak of
jobs running at once is the database's own figure, and records when it started.
"""

from __future__ import annotations

import asyncio
import sys
import time

import psycopg
from dbos import DBOS, SetWorkflowID

from pipeline.distributed import app
from pipeline.distributed.queues import POLL_S, QueueSpec

QUEUE = QueueSpec("spike.default", 4, {"limit": 6, "period": 2.0})
#: Jobs one worker may run at once: the global 4 can only be reached by two or more processes,
#: so the limits are always exercised across processes (left to chance, one worker could take
#: every job now and then).
PER_WORKER = 2
#: How long each job holds its slot (s): longer than a worker's look at the queue (0.25 s) by a
#: margin a loaded machine keeps, so that two workers' pairs of jobs overlap (the peak of 4).
HOLD_S = 1.5
DSN = sys.argv[1] if __name__ == "__main__" else ""


def _sql(sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


@DBOS.step()
async def enter(tag: str) -> None:
    await asyncio.to_thread(
        _sql,
        "UPDATE spike.state SET cur = cur + 1, peak = GREATEST(peak, cur + 1);"
        f"INSERT INTO spike.starts VALUES ('{tag}', clock_timestamp())",
    )


@DBOS.step()
async def leave(tag: str) -> None:
    await asyncio.to_thread(
        _sql,
        f"UPDATE spike.state SET cur = cur - 1, done = done + 1; "
        f"INSERT INTO spike.ends VALUES ('{tag}', clock_timestamp())",
    )


@DBOS.workflow()
async def job(tag: str, hold_s: float) -> str:
    await enter(tag)
    await DBOS.sleep_async(hold_s)
    await leave(tag)
    return tag


def main() -> None:
    role = sys.argv[2]
    if role.startswith("enqueue:"):
        _, n, prefix = role.split(":")
        ex = app.launch(DSN, listen=[])
        try:
            DBOS.register_queue(
                QUEUE.name,
                global_concurrency=QUEUE.concurrency,
                worker_concurrency=PER_WORKER,
                limiter=QUEUE.limiter,  # type: ignore[arg-type]
                polling_interval_sec=POLL_S,
                on_conflict="always_update",
            )
            q = DBOS.retrieve_queue(QUEUE.name)
            assert q is not None
            for i in range(int(n)):
                with SetWorkflowID(f"{prefix}-{i}"):
                    q.enqueue(job, f"{prefix}-{i}", HOLD_S)
        finally:
            ex.stop()
        return
    total = int(role.split(":")[1])
    ex = app.launch(DSN, watch_s=0.5)
    print("up", flush=True)  # the test enqueues once every worker is dequeuing
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = _sql("SELECT done FROM spike.state")[0][0]
            if isinstance(done, int) and done >= total:
                break
            time.sleep(0.2)
    finally:
        ex.stop()


if __name__ == "__main__":
    main()
