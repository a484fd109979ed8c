"""Connecting to the distributed mode's PostgreSQL store: the URL, its safe name, clear errors.

A store is a libpq URL, ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]``
(``postgres://`` too). Whatever a person or a log sees names it by :func:`safe_name`
(``postgresql://USER@HOST:PORT/DATABASE``): never the password, never the query string (libpq
takes ``?password=`` too). The password is also registered with
:func:`pipeline._util.redaction.register`, so a log line that quotes it by accident is masked.

Only this module and :mod:`.pgjournal` import psycopg; the embedded mode never imports either.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from pipeline._util.redaction import register
from pipeline.errors import CheckpointError, UsageError

SCHEMA = "pipeline"
SCHEMA_VERSION = 1

#: What a store URL looks like (for error messages).
URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"

#: A run id: also the name of the run directory ``pipeline pull`` writes.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

#: How long a connection to the store may take to open (s).
CONNECT_TIMEOUT_S = 10


class StoreError(UsageError):
    """The store URL is malformed, or the server cannot be reached or refuses us (exit 2).

    The message names the store by :func:`safe_name` (host, port, database, user): never the
    password.
    """


class StoreDamaged(CheckpointError):
    """A row of the store cannot be trusted, or a write failed: fail-stop (exit 3).

    Examples: an unknown event, data that is not a JSON object, a record the fold refuses. The
    message names the run and the record's ``seq``.
    """


def _secrets(dsn: str) -> list[str]:
    """The password(s) in ``dsn``, as written and decoded (URL userinfo and ``?password=``)."""
    out: list[str] = []
    parts = urlsplit(dsn)
    if parts.password:
        out += [parts.password, unquote(parts.password)]
    for m in re.finditer(r"(?:^|&)password=([^&]*)", parts.query):
        out += [m.group(1), unquote(m.group(1))]
    return [s for s in out if s]


def check_url(dsn: str) -> str:
    """``dsn`` if it is a PostgreSQL URL with a host and a database, else :class:`StoreError`.

    Raises:
        StoreError: another scheme, no host or no database name (the message shows the URL
            without its password).
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(
            f"--store: {safe_name(dsn)!r} is not a PostgreSQL URL (allowed: {URL_FORM})"
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise StoreError(f"--store: {safe_name(dsn)}: the port is not a number") from None
    if not host or not parts.path.strip("/"):
        raise StoreError(
            f"--store: {safe_name(dsn)} names no host or no database (allowed: {URL_FORM})"
        )
    del port
    for secret in _secrets(dsn):
        register(secret)
    return dsn


def safe_name(dsn: str) -> str:
    """``dsn`` without password and query: ``postgresql://USER@HOST:PORT/DATABASE``."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable store URL>"
    if not parts.scheme:
        return "<not a URL>"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def clean(dsn: str, message: str) -> str:
    """``message`` (a server or libpq error) with the password(s) of ``dsn`` masked, first line."""
    text = (message.strip().splitlines() or [""])[0]
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def connect(
    dsn: str, *, autocommit: bool = True, application_name: str = "pipeline"
) -> psycopg.Connection[Any]:
    """A new connection to the store (``application_name`` shows in ``pg_stat_activity``).

    Raises:
        StoreError: a malformed URL, or the server is unreachable or refuses the login (the
            message names host, port, database and user, never the password).
    """
    check_url(dsn)
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to the store {safe_name(dsn)}: {clean(dsn, str(exc))}"
        ) from None


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a valid run id (also a directory name), else :class:`UsageError`."""
    if not RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"run id {run_id!r} is not allowed (allowed: [A-Za-z0-9][A-Za-z0-9_.-]*, at most "
            "128 characters)"
        )
    return run_id


_DDL_LOCK = 0x706970656C696E65  # pg_advisory_xact_lock key around the DDL ("pipeline")
_DDL = (
    "CREATE SCHEMA IF NOT EXISTS pipeline",
    "CREATE TABLE IF NOT EXISTS pipeline.meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS pipeline.runs (
        run_id text PRIMARY KEY,
        manifest_name text NOT NULL,
        manifest_text text NOT NULL,
        budget_usd double precision NULL,
        created timestamptz NOT NULL DEFAULT now(),
        last_seq bigint NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS pipeline.events (
        run_id text NOT NULL REFERENCES pipeline.runs (run_id) ON DELETE CASCADE,
        seq bigint NOT NULL,
        ts text NOT NULL,
        ev text NOT NULL,
        shot text NULL,
        data jsonb NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (run_id, seq))""",
    "INSERT INTO pipeline.meta VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING",
)


def create_schema(conn: psycopg.Connection[Any], dsn: str) -> None:
    """Create the ``pipeline`` schema and its tables on ``conn`` if missing (idempotent).

    Safe when many processes call it at once: a transaction-level advisory lock serialises the
    DDL (``CREATE ... IF NOT EXISTS`` alone can still collide on the catalog).

    Raises:
        StoreError: the server failed, or the user may not create them.
        CheckpointError: the tables were made by a newer pipeline (a higher schema version).
    """
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for statement in _DDL:
                conn.execute(statement)
            row = conn.execute(
                "SELECT value FROM pipeline.meta WHERE key = 'schema_version'"
            ).fetchone()
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot create the pipeline tables in {safe_name(dsn)}: {clean(dsn, str(exc))}"
        ) from None
    version = int(row[0]) if row else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{safe_name(dsn)}: the pipeline tables are of a newer pipeline (schema v{version}; "
            f"this one reads v{SCHEMA_VERSION})"
        )
