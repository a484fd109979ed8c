"""DBOS Transact in one process: configuration, launch and shutdown (one executor per process).

Every process of the distributed mode (``pipeline run --store``, ``pipeline worker``) is one DBOS
*executor* with an id of its own (a UUID): DBOS marks each workflow it runs with that id. DBOS's
tables live in the schema ``dbos`` of the store's database, ours in ``pipeline``.

Before DBOS starts, the process takes its liveness lock (:mod:`.liveness`), so there is never a
moment where it owns workflows that others could not tell are alive; after launch a thread
watches the other executors and recovers the workflows of any that died.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dbos import DBOS, DBOSConfig

from pipeline.distributed.liveness import Liveness

log = logging.getLogger("pipeline")

#: DBOS's application name: queues and workflows are looked up under it.
APP_NAME = "pipeline"


@dataclass
class Executor:
    """This process as a DBOS executor.

    Attributes:
        dsn: the store's URL (libpq form; never printed: see ``pgconn.safe_name``).
        executor_id: this process's executor id (a UUID, as DBOS records it).
        liveness: the lock that tells others this process is alive, and the recovery watcher.
    """

    dsn: str
    executor_id: str
    liveness: Liveness
    _stopped: bool = field(default=False, repr=False)

    def stop(self, *, drain_s: int = 0) -> None:
        """Stop DBOS (waiting up to ``drain_s`` seconds for running workflows); drop the lock.

        Once the liveness lock is gone the other executors recover what is left. Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        self.liveness.stop_watching()
        try:
            DBOS.destroy(workflow_completion_timeout_sec=drain_s)
        finally:
            self.liveness.release()


def dbos_config(
    dsn: str, executor_id: str, *, pool_size: int = 10, notify_poll_s: float = 0.2
) -> DBOSConfig:
    """DBOS's configuration for one process on the store ``dsn``.

    Args:
        dsn: ``postgresql://...`` of the store (DBOS's tables go to schema ``dbos``).
        executor_id: this process's executor id.
        pool_size: connections of DBOS's system-database pool.
        notify_poll_s: how often DBOS's notification listener looks for results (seconds).
    """
    config: dict[str, Any] = {
        "name": APP_NAME,
        "system_database_url": dsn,
        "executor_id": executor_id,
        "sys_db_pool_size": pool_size,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": notify_poll_s,
        # No round trip before each pooled connection's use: DBOS's own retries (db_retry)
        # already cover a connection that died, and the ping was ~5 % of a worker's CPU.
        "db_engine_kwargs": {"pool_pre_ping": False},
    }
    out: DBOSConfig = DBOSConfig(**config)  # type: ignore[typeddict-item]
    return out


def launch(
    dsn: str,
    *,
    listen: Sequence[str] | None = None,
    watch_s: float = 1.0,
    pool_size: int = 10,
) -> Executor:
    """Start DBOS in this process as a new executor on ``dsn``.

    The workflows this process may run must already be registered (imported) when this is called.

    Args:
        dsn: the store's URL.
        listen: names of the queues this process dequeues from (None: every queue).
        watch_s: how often the recovery watcher looks for dead executors (seconds).
        pool_size: connections of DBOS's system-database pool.

    Returns:
        The executor; call :meth:`Executor.stop` before the process ends.

    Raises:
        pipeline.journal.pgconn.StoreError: the store cannot be reached.
    """
    executor_id = uuid.uuid4().hex
    liveness = Liveness(dsn, executor_id)
    liveness.acquire()
    try:
        DBOS(config=dbos_config(dsn, executor_id, pool_size=pool_size))
        if listen is not None:
            DBOS.listen_queues(list(listen))
        DBOS.launch()
    except BaseException:
        DBOS.destroy()
        liveness.release()
        raise
    liveness.start_watching(watch_s)
    log.debug("executor %s started", executor_id)
    return Executor(dsn, executor_id, liveness)
