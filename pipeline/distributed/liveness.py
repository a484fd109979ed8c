"""Which executors are alive, by PostgreSQL's own liveness, and recovery of the dead ones' work.

Self-hosted DBOS recovers a dead executor's workflows only when told to
(``DBOS._recover_pending_workflows([executor_id])``, what its admin endpoint
``/dbos-workflow-recovery`` calls). To know *that* an executor died, each process holds a
session-level advisory lock named after its executor id on a connection of its own, from
before DBOS starts until it stops. PostgreSQL releases a session lock when the session ends: the
process exited, was killed (``kill -9``) or lost its machine (the server notices through TCP
keepalives). No lease, no heartbeat table: a live session *is* the liveness.

Every :attr:`Liveness.watch_s` seconds a watcher thread lists the executors that own PENDING
workflows (``dbos.workflow_status``) and tries each one's lock without waiting; one it can take
is dead: it lets the lock go and asks DBOS to recover that executor's workflows. DBOS puts them
back on their own queue (ENQUEUED, keeping their place: queues dequeue oldest first) and a live
executor dequeues and resumes each from its last completed step. Two watchers recovering the same
executor at once are harmless: DBOS's re-enqueue matches only rows still owned by the dead one.

A process whose lock connection fails can no longer prove it is alive, and the others will
recover its workflows: it stops at once (fail-stop, exit 3) rather than run them twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from typing import Any

import psycopg

from pipeline.journal.pgconn import StoreError, clean, connect, safe_name

log = logging.getLogger("pipeline")

#: Exit status of a process that lost its liveness lock (the checkpoint fail-stop's code).
LOST_LOCK_EXIT = 3

#: The ``application_name`` of a live executor's lock connection (one per process).
EXECUTOR_APP = "pipeline-executor"

_LIVE = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = %s AND datname = current_database()
"""


def live_executors(conn: psycopg.Connection[Any]) -> int:
    """How many executor processes are alive on this store now (their lock connections).

    Raises:
        psycopg.Error: the query failed.
    """
    row = conn.execute(_LIVE, (EXECUTOR_APP,)).fetchone()
    return int(row[0]) if row else 0


_PENDING_EXECUTORS = """
SELECT DISTINCT executor_id FROM dbos.workflow_status
WHERE status = 'PENDING' AND executor_id IS NOT NULL AND executor_id <> %s
"""


def lock_key(executor_id: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of ``executor_id``."""
    digest = hashlib.blake2b(f"pipeline-executor:{executor_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Liveness:
    """This process's liveness lock and the watcher that recovers dead executors' workflows.

    Args:
        dsn: the store's URL.
        executor_id: this process's DBOS executor id.
    """

    def __init__(self, dsn: str, executor_id: str) -> None:
        self.dsn = dsn
        self.executor_id = executor_id
        self.watch_s = 1.0
        self.recovered: list[str] = []  #: executors whose workflows this process recovered
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Open the lock connection (with TCP keepalives) and take this executor's lock.

        Raises:
            StoreError: the store cannot be reached.
        """
        conn = connect(self.dsn, application_name=EXECUTOR_APP)
        try:
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(self.executor_id),))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot lock in the store {safe_name(self.dsn)}: {clean(self.dsn, str(exc))}"
            ) from None
        self._conn = conn

    def release(self) -> None:
        """Close the lock connection, which drops the lock. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def start_watching(self, every_s: float) -> None:
        """Start the watcher thread (daemon).

        Every ``every_s`` seconds it checks the lock connection and recovers the workflows of
        dead executors.
        """
        self.watch_s = every_s
        self._thread = threading.Thread(target=self._watch, name="pipeline-liveness", daemon=True)
        self._thread.start()

    def stop_watching(self) -> None:
        """Stop the watcher thread (waits for its current pass)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_s):
            try:
                self.check_own_lock()
                self.recover_dead()
            except psycopg.Error as exc:
                log.warning("liveness check failed: %s", clean(self.dsn, str(exc)))
            except Exception:
                log.exception("liveness watcher")

    def check_own_lock(self) -> None:
        """Exit the process (status 3) when the lock connection is gone (see the module doc)."""
        conn = self._conn
        if conn is None or self._stop.is_set():
            return
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            if self._stop.is_set():
                return
            log.error(
                "lost the connection that proves this worker alive (%s); stopping so that "
                "the other workers take over its shots",
                clean(self.dsn, str(exc)),
            )
            os._exit(LOST_LOCK_EXIT)

    def dead_executors(self) -> list[str]:
        """Executors that own PENDING workflows and hold no liveness lock (no live session)."""
        dead: list[str] = []
        with connect(self.dsn) as conn:
            try:
                rows = conn.execute(_PENDING_EXECUTORS, (self.executor_id,)).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
            for (executor_id,) in rows:
                key = lock_key(str(executor_id))
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if got is not None and got[0]:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    dead.append(str(executor_id))
        return dead

    def recover_dead(self) -> list[str]:
        """Recover the PENDING workflows of every dead executor; returns their ids."""
        from dbos import DBOS

        dead = self.dead_executors()
        if dead:
            handles = DBOS._recover_pending_workflows(dead)
            log.info("recovered %d workflows of stopped workers %s", len(handles), dead)
            self.recovered.extend(dead)
        return dead
