"""A worker process: DBOS launched on the store, dequeuing shot workflows until told to stop.

``pipeline worker --store URL [--providers a,b]`` and ``pipeline run --store URL`` (which works
too, unless ``--no-work``) both go through :func:`start` and :func:`Worker.stop`.

Stopping is careful with money: no new paid call starts once :meth:`Worker.stop` is called, and
the calls already in the air are waited for (up to :data:`SUBMIT_DRAIN_S`), so a stopped worker
leaves no ambiguous submit behind; its unfinished shots stay PENDING in DBOS and the other
workers recover them once its liveness lock is gone (:mod:`.liveness`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.distributed import app, intent, runtime
from pipeline.distributed.queues import FETCH_QUEUE, RUN_QUEUE
from pipeline.journal.pgconn import connect
from pipeline.journal.pgjournal import PgJournal

log = logging.getLogger("pipeline")

#: Longest a stopping worker waits for its submits in the air (s).
SUBMIT_DRAIN_S = 60.0
#: How often a worker limited to some providers looks for new account queues of them (s).
REFRESH_S = 2.0


def prepare_store(dsn: str) -> None:
    """Create the pipeline's tables in the store if missing (idempotent).

    Raises:
        StoreError: unreachable, or the user may not create tables.
    """
    rt_journal = PgJournal(dsn)
    try:
        rt_journal.ensure_schema()
        with connect(dsn) as conn:
            intent.ensure_schema(conn)
    finally:
        rt_journal.close()


def provider_queues(dsn: str, providers: Sequence[str]) -> list[str]:
    """Names of the account queues in the store that belong to ``providers``."""
    wanted = set(providers)
    with connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT name FROM dbos.queues").fetchall()
        except Exception:  # no DBOS tables yet: no queues
            return []
    return sorted(str(n) for (n,) in rows if str(n).split(".", 1)[0] in wanted)


@dataclass
class Worker:
    """A started worker process (:func:`start`).

    Attributes:
        executor: this process as a DBOS executor.
        runtime: what its workflows share.
    """

    executor: app.Executor
    runtime: runtime.Runtime
    _refresh: threading.Event | None = None

    def stop(self) -> None:
        """Stop taking work, let the paid calls in the air finish, then stop DBOS. Idempotent."""
        if self._refresh is not None:
            self._refresh.set()
        self.runtime.stopping = True
        deadline = time.monotonic() + SUBMIT_DRAIN_S
        while self.runtime.submits_in_air > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # DBOS first: it cancels the workflows still running here (they stay PENDING, and are
        # recovered elsewhere); closing their adapters or journal under them would instead end
        # them with an error. The adapters die with the process.
        self.executor.stop()
        runtime.uninstall()


def start(
    dsn: str,
    keys: Mapping[str, str],
    *,
    providers: Sequence[str] | None = None,
    work: bool = True,
    watch_s: float = 1.0,
) -> Worker:
    """Launch this process as a worker on the store ``dsn``.

    Args:
        dsn: the store's URL.
        keys: API key variables this worker may use (name -> value).
        providers: dequeue only these providers' account queues (None: all).
        work: False to dequeue nothing (``pipeline run --no-work``: enqueue and leave).
        watch_s: how often dead workers are looked for (s).

    Raises:
        StoreError: the store cannot be reached.
    """
    from pipeline.distributed import workflows  # registers the workflows before launch

    del workflows
    prepare_store(dsn)
    rt = runtime.install(dsn, keys)
    listen: list[str] | None = None
    if not work:
        listen = []
    elif providers is not None:
        listen = [RUN_QUEUE, FETCH_QUEUE, *provider_queues(dsn, providers)]
    try:
        executor = app.launch(dsn, listen=listen, watch_s=watch_s)
    except BaseException:
        runtime.uninstall()
        raise
    worker = Worker(executor, rt)
    if work and providers is not None:
        worker._refresh = threading.Event()
        thread = threading.Thread(
            target=_follow_queues, args=(dsn, providers, worker._refresh), daemon=True
        )
        thread.start()
    return worker


def _follow_queues(dsn: str, providers: Sequence[str], stop: threading.Event) -> None:
    """Add the providers' account queues created after launch to what this worker dequeues.

    DBOS takes the names to listen to only before launch (``DBOS.listen_queues``); its queue
    thread re-reads that list every second, so new names are appended to it here.
    """
    from dbos._dbos import _get_dbos_instance

    while not stop.wait(REFRESH_S):
        try:
            names = provider_queues(dsn, providers)
            listening = _get_dbos_instance()._listening_queues
            if listening is not None:
                listening.extend(n for n in names if n not in listening)
        except Exception as exc:
            log.debug("queue refresh: %s", exc)
