"""The run journal in PostgreSQL: the distributed mode's checkpoint (the embedded mode's is JSONL).

A run's events are rows of ``pipeline.events``, with the same event names and fields as the
lines of ``checkpoint.jsonl`` (:class:`pipeline.models.Event`, :class:`~.lines.Record`), and
are folded into a :class:`~.state.RunState` by the same fold (:func:`.state.folder`), so every
reader (``status``, ``storyboard``, ``report.json``...) sees one state whichever backend holds
the run. The tables are described in :mod:`.pgrows`.

**Sequence numbers.** :meth:`PgJournal.append` increments the run's ``runs.last_seq`` and
inserts the row in one transaction: the counter row stays locked until that transaction ends,
so appenders of one run (any connection, any machine) are serialised, ``seq`` strictly
increases with no gaps, and rows become visible in ``seq`` order; a reader that resumes after
the last ``seq`` it saw never misses a row. Keep such transactions short (never across a
provider call): they hold the run's counter.

The API is synchronous (psycopg 3); callers on an event loop wrap calls in
``anyio.to_thread.run_sync``. One :class:`PgJournal` may be shared by threads: its own
connection is used under a lock, and :meth:`PgJournal.pooled` lends connections of a pool
(psycopg_pool) for the callers' own transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from pipeline._util.gcutil import gc_paused
from pipeline.errors import UsageError
from pipeline.journal.lines import Record, now_ts
from pipeline.journal.pgconn import (
    CONNECT_TIMEOUT_S,
    check_run_id,
    clean,
    connect,
    create_schema,
    safe_name,
)
from pipeline.journal.pgconn import StoreDamaged as StoreDamaged
from pipeline.journal.pgconn import StoreError as StoreError
from pipeline.journal.pgrows import BUMP, COPY, INSERT, ROWS, RUN_COLUMNS, decode_row
from pipeline.journal.pgrows import RunInfo as RunInfo
from pipeline.journal.pgrows import encode_data as encode_data
from pipeline.journal.state import RunState, folder
from pipeline.models import Event

_BATCH = 5000  # rows read per query by records() and state(), written per COPY

#: Most connections :meth:`PgJournal.pooled` keeps open.
POOL_MAX = 8


class PgJournal:
    """The journals of all runs of one store (a PostgreSQL database).

    Args:
        dsn: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (connects lazily, on first use).

    Raises (every method that touches the database):
        StoreError: malformed URL, server unreachable or login refused (exit 2); the message
            names the store without its password.
        StoreDamaged: a row that cannot be trusted, or a failed write (exit 3), naming run and seq.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.name = safe_name(dsn)
        self._conn: psycopg.Connection[Any] | None = None
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._lock = threading.RLock()

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection for the caller's own transactions; the caller closes it.

        Use ``with conn.transaction(): ...`` and pass ``conn`` to :meth:`append`.

        Raises:
            StoreError: unreachable or refused.
        """
        return connect(self._dsn)

    @contextmanager
    def pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection of the journal's pool, given back when the block ends.

        For the caller's own short transactions (``with conn.transaction(): ...``), many per
        second from many threads, without a new connection (TCP, login) for each: the pool
        keeps up to :data:`POOL_MAX` open, checks one with a round trip before lending it, and
        drops one that broke.

        Raises:
            StoreError: no connection within the connect timeout (unreachable or refused).
        """
        with self._lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self._dsn,
                    min_size=1,
                    max_size=POOL_MAX,
                    kwargs={"autocommit": True, "application_name": "pipeline"},
                    check=psycopg_pool.ConnectionPool.check_connection,
                    timeout=CONNECT_TIMEOUT_S,
                    name="pipeline",
                    open=True,
                )
            pool = self._pool
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout:
            connect(self._dsn).close()  # raises the StoreError that says why
            raise StoreError(f"the store {self.name} lent no connection in time") from None

    def _shared(self) -> psycopg.Connection[Any]:
        """The journal's own connection (reopened when it broke). Call under ``self._lock``."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._conn = connect(self._dsn)
        return conn

    def _failed(self, what: str, exc: psycopg.Error) -> StoreError | StoreDamaged:
        """The error to raise for a psycopg failure while doing ``what``."""
        text = clean(self._dsn, str(exc))
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"{what}: the store {self.name} failed: {text}")
        return StoreDamaged(f"{what}: the store {self.name} refused it: {text}")

    def close(self) -> None:
        """Close the journal's own connection and its pool (they reopen on next use). Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> PgJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_schema(self) -> None:
        """Create the schema and tables if missing (idempotent, safe from many processes).

        Raises:
            StoreError: unreachable, or the user may not create them.
            CheckpointError: the tables were made by a newer pipeline (a higher schema version).
        """
        with self._lock:
            create_schema(self._shared(), self._dsn)

    def create_run(
        self, run_id: str, *, manifest_name: str, manifest_text: str, budget_usd: float | None
    ) -> bool:
        """Create the run (its events start at seq 1); False when it already existed.

        Joining an existing run changes nothing of it.

        Raises:
            UsageError: ``run_id`` is not ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128).
            StoreError: unreachable, or no tables (call :meth:`ensure_schema` first).
        """
        check_run_id(run_id)
        with self._lock:
            try:
                row = (
                    self._shared()
                    .execute(
                        "INSERT INTO pipeline.runs (run_id, manifest_name, manifest_text, "
                        "budget_usd) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
                        (run_id, manifest_name, manifest_text, budget_usd),
                    )
                    .fetchone()
                )
            except psycopg.Error as exc:
                raise self._failed(f"create run {run_id}", exc) from None
        return row is not None

    def run_info(self, run_id: str) -> RunInfo | None:
        """The run, or None when the store has no such run (or no pipeline tables at all).

        Raises:
            StoreError: unreachable.
        """
        rows = self._runs(f"SELECT {RUN_COLUMNS} FROM pipeline.runs WHERE run_id = %s", run_id)
        return rows[0] if rows else None

    def runs(self) -> list[RunInfo]:
        """Every run of the store, oldest first (empty when it has no pipeline tables).

        Raises:
            StoreError: unreachable.
        """
        return self._runs(f"SELECT {RUN_COLUMNS} FROM pipeline.runs ORDER BY created, run_id")

    def _runs(self, query: str, *params: Any) -> list[RunInfo]:
        with self._lock:
            conn = self._shared()
            try:
                rows = conn.execute(query, params).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
            except psycopg.Error as exc:
                raise self._failed("read the runs", exc) from None
        return [RunInfo(*row) for row in rows]

    def require(self, run_id: str) -> RunInfo:
        """The run, or a :class:`~pipeline.errors.UsageError` naming the store and its runs.

        Raises:
            UsageError: no such run (exit 2).
            StoreError: unreachable.
        """
        info = self.run_info(run_id)
        if info is None:
            known = [r.run_id for r in self.runs()]
            listed = ", ".join(known[-10:]) if known else "none"
            raise UsageError(f"{self.name} has no run {run_id!r} (runs: {listed})")
        return info

    def append(
        self,
        run_id: str,
        ev: Event,
        shot: str | None,
        fields: Mapping[str, Any],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Record:
        """Append one event to the run; committed before this returns.

        Fields whose value is None are left out, as the JSONL writer does.

        With ``conn``, the row is written inside the caller's open transaction on that
        connection (a savepoint), so it commits or rolls back with the caller's other writes;
        the run's counter row stays locked until then.

        Returns:
            The record as stored (its ``seq`` and ``ts``).

        Raises:
            ValueError: a reserved field name, or a value that is not JSON.
            StoreDamaged: the run does not exist, or the insert failed (with ``conn``, psycopg's
                error is the cause).
            StoreError: the store is unreachable (the append may or may not have committed).
        """
        data = {k: v for k, v in fields.items() if v is not None}
        body = encode_data(data)
        ts = now_ts()
        if conn is not None:
            return self._append_on(conn, run_id, ev, shot, ts, data, body)
        with self._lock:
            return self._append_on(self._shared(), run_id, ev, shot, ts, data, body)

    def _append_on(
        self,
        conn: psycopg.Connection[Any],
        run_id: str,
        ev: Event,
        shot: str | None,
        ts: str,
        data: dict[str, Any],
        body: str,
    ) -> Record:
        try:
            with conn.transaction():
                row = conn.execute(BUMP, (1, run_id)).fetchone()
                if row is None:
                    raise StoreDamaged(f"{self.name} has no run {run_id!r} to append {ev.value} to")
                seq = int(row[0])
                conn.execute(INSERT, (run_id, seq, ts, ev.value, shot, body))
        except psycopg.Error as exc:
            raise self._failed(f"append {ev.value} to run {run_id}", exc) from exc
        return Record(seq=seq, ts=ts, ev=ev, shot=shot, data=data)

    def append_many(
        self, run_id: str, items: Iterable[tuple[Event, str | None, Mapping[str, Any]]]
    ) -> int:
        """Append many events at once (e.g. ``shot_planned`` for a whole plan).

        One transaction and one ``COPY`` per 5,000 rows; fields are kept as given (None too).

        Args:
            run_id: the run.
            items: ``(event, shot or None, fields)`` in order.

        Returns:
            ``seq`` of the last row appended (the run's ``last_seq``).

        Raises:
            ValueError: as for :meth:`append` (rows of earlier chunks stay committed).
            StoreDamaged / StoreError: as for :meth:`append`.
        """
        return self._append_rows(run_id, ((now_ts(), ev, shot, f) for ev, shot, f in items))

    def import_records(self, run_id: str, records: Iterable[Record]) -> int:
        """Append ``records`` (e.g. a local checkpoint's), keeping their ``ts`` and fields.

        Their ``seq`` are renumbered after the run's last. Returns the new ``last_seq``.

        Raises:
            ValueError / StoreDamaged / StoreError: as for :meth:`append_many`.
        """
        return self._append_rows(run_id, ((r.ts, r.ev, r.shot, r.data) for r in records))

    def _append_rows(
        self, run_id: str, rows: Iterable[tuple[str, Event, str | None, Mapping[str, Any]]]
    ) -> int:
        chunk: list[tuple[str, str, str | None, str]] = []
        last = None
        for ts, ev, shot, fields in rows:
            chunk.append((ts, ev.value, shot, encode_data(fields)))
            if len(chunk) >= _BATCH:
                last = self._copy(run_id, chunk)
                chunk = []
        if chunk:
            last = self._copy(run_id, chunk)
        return self._last_seq(run_id) if last is None else last

    def _copy(self, run_id: str, rows: list[tuple[str, str, str | None, str]]) -> int:
        with self._lock:
            conn = self._shared()
            try:
                with conn.transaction():
                    row = conn.execute(BUMP, (len(rows), run_id)).fetchone()
                    if row is None:
                        raise StoreDamaged(f"{self.name} has no run {run_id!r} to append to")
                    last = int(row[0])
                    seq = last - len(rows)
                    with conn.cursor().copy(COPY) as copy:
                        for ts, ev, shot, body in rows:
                            seq += 1
                            copy.write_row((run_id, seq, ts, ev, shot, body))
            except psycopg.Error as exc:
                raise self._failed(f"append to run {run_id}", exc) from None
        return last

    def _last_seq(self, run_id: str) -> int:
        info = self.run_info(run_id)
        if info is None:
            raise StoreDamaged(f"{self.name} has no run {run_id!r} to append to")
        return info.last_seq

    def _rows(
        self, run_id: str, after_seq: int
    ) -> Iterator[tuple[int, str, Event, str | None, Any]]:
        """The run's rows after ``after_seq``, checked, in seq order, a batch per query."""
        after = after_seq
        while True:
            with self._lock:
                try:
                    rows = self._shared().execute(ROWS, (run_id, after, _BATCH)).fetchall()
                except psycopg.errors.UndefinedTable:
                    return
                except psycopg.Error as exc:
                    raise self._failed(f"read run {run_id}", exc) from None
            for row in rows:
                yield decode_row(self.name, run_id, row)
            if len(rows) < _BATCH:
                return
            after = rows[-1][0]

    def records(self, run_id: str, after_seq: int = 0) -> Iterator[Record]:
        """The run's records after ``after_seq``, in seq order (empty for an unknown run).

        Read 5,000 rows per query: memory stays flat however long the run.

        Raises:
            StoreDamaged: a row with an unknown event or data that is not a JSON object (the
                message names the run and the seq).
            StoreError: unreachable.
        """
        for seq, ts, ev, shot, data in self._rows(run_id, after_seq):
            yield Record(seq=seq, ts=ts, ev=ev, shot=shot, data=data)

    def state(self, run_id: str) -> RunState:
        """The run folded into a :class:`RunState` by the JSONL's fold.

        That is :func:`pipeline.journal.state.folder`: the result equals ``replay`` of the same
        records read from a ``checkpoint.jsonl``.

        Raises:
            UsageError: no such run.
            StoreDamaged: a row that cannot be read or folded (naming the run and the seq).
            StoreError: unreachable.
        """
        self.require(run_id)
        return self.fold_into(RunState(), run_id)

    def fold_into(self, state: RunState, run_id: str, after_seq: int = 0) -> RunState:
        """Fold the run's records after ``after_seq`` into ``state`` (in place); returns it.

        This is how a reader that keeps a state follows a live run.

        Raises:
            StoreDamaged / StoreError: as for :meth:`state`.
        """
        fold = folder(state)
        with gc_paused():
            for seq, ts, ev, shot, data in self._rows(run_id, after_seq):
                try:
                    fold(seq, ts, ev, shot, data)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    raise StoreDamaged(
                        f"{self.name}: run {run_id}, seq {seq} ({ev.value}): a record this "
                        f"pipeline never writes ({type(exc).__name__}: {exc})"
                    ) from None
        return state

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only ``statement`` on the journal's connection (for read-side views).

        Raises:
            StoreError: unreachable, or the statement failed (e.g. a table that does not exist).
        """
        with self._lock:
            try:
                return list(self._shared().execute(statement, params).fetchall())
            except psycopg.Error as exc:
                raise StoreError(f"{self.name}: {clean(self._dsn, str(exc))}") from None
