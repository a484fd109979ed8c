"""The rows of the PostgreSQL journal (:mod:`.pgjournal`): SQL, encoding and checked decoding.

A row of ``pipeline.events`` is a JSONL record without ``v`` and ``crc``: ``seq``, ``ts``,
``ev`` (a :class:`pipeline.models.Event` value), ``shot`` (or NULL) and ``data`` (a JSON
object of every other field, as :func:`encode_data` writes it).

Tables (schema ``pipeline``, beside DBOS's own schema in the same database; created by
:func:`.pgconn.create_schema`)::

    pipeline.meta   (key text primary key, value text)             schema_version = 1
    pipeline.runs   (run_id text primary key, manifest_name text, manifest_text text,
                     budget_usd double precision null, created timestamptz, last_seq bigint)
    pipeline.events (run_id text, seq bigint, ts text, ev text, shot text null, data jsonb,
                     primary key (run_id, seq))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.journal.pgconn import StoreDamaged
from pipeline.models import Event

_EVENTS = {e.value: e for e in Event}
_RESERVED = frozenset({"v", "seq", "ts", "ev", "shot", "crc"})
BUMP = "UPDATE pipeline.runs SET last_seq = last_seq + %s WHERE run_id = %s RETURNING last_seq"
INSERT = (
    "INSERT INTO pipeline.events (run_id, seq, ts, ev, shot, data) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
)
COPY = "COPY pipeline.events (run_id, seq, ts, ev, shot, data) FROM STDIN"
ROWS = (
    "SELECT seq, ts, ev, shot, data::text FROM pipeline.events "
    "WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
)
RUN_COLUMNS = "run_id, manifest_name, manifest_text, budget_usd, created, last_seq"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of the store.

    Attributes:
        run_id: the run's id (``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters).
        manifest_name: the manifest's ``name``.
        manifest_text: the manifest's YAML, as the run was started from it.
        budget_usd: the run's spend limit in US dollars, shared by all its workers (None: none).
        created: when the run was created (timezone-aware).
        last_seq: ``seq`` of its last event (0: none yet).
    """

    run_id: str
    manifest_name: str
    manifest_text: str
    budget_usd: float | None
    created: datetime
    last_seq: int


def encode_data(fields: Mapping[str, Any]) -> str:
    """``fields`` as the JSON text of an event's ``data``.

    ``data`` is what a JSONL line holds besides ``v``, ``seq``, ``ts``, ``ev``, ``shot``, ``crc``.

    Raises:
        ValueError: a field uses a reserved name or is not JSON-serialisable.
    """
    clash = _RESERVED & fields.keys()
    if clash:
        raise ValueError(f"reserved checkpoint field(s): {sorted(clash)}")
    try:
        return orjson.dumps(dict(fields), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None


def decode_row(
    store: str, run_id: str, row: tuple[Any, ...]
) -> tuple[int, str, Event, str | None, dict[str, Any]]:
    """A row of :data:`ROWS` as a record's parts ``(seq, ts, ev, shot, data)``, checked.

    Raises:
        StoreDamaged: an unknown event, data that is not a JSON object, or a ``ts`` that is not
            text (the message names the store, the run and the seq).
    """
    seq, ts, ev, shot, text = row
    event = _EVENTS.get(ev)
    if event is None:
        raise StoreDamaged(
            f"{store}: run {run_id}, seq {seq}: unknown event {ev!r}; this store was written by "
            "another program or a newer pipeline"
        )
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(ts, str):
        raise StoreDamaged(
            f"{store}: run {run_id}, seq {seq} ({ev}): its data is not a JSON object"
        )
    return seq, ts, event, shot, data
