"""A real PostgreSQL server for the tests of the distributed mode, from the system's ``initdb``
and ``pg_ctl``.

PostgreSQL refuses to run as root and sessions run as root, so the cluster is made and started as
the ``postgres`` user (``runuser -u postgres --``) in a temporary directory that user owns. One
server per pytest-xdist worker (session scope), on a free loopback port; each test that asks for
:func:`pg_database` gets a database of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_USER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*argv: str) -> list[str]:
    """``argv`` run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", _USER, "--", *argv]
    return list(argv)


@dataclass(frozen=True)
class PgServer:
    """A running server: ``dsn(db)`` is a libpq URL for database ``db`` on it."""

    host: str
    port: int
    data_dir: Path

    def dsn(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (trust authentication, loopback)."""
        return f"postgresql://{_USER}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` and return its unaligned output (raises on error)."""
        out = subprocess.run(
            [shutil.which("psql") or "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(database), "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return out.stdout.strip()


def start_server(base: Path) -> tuple[PgServer, subprocess.Popen[bytes] | None]:
    """``initdb`` a cluster in ``base/data`` and start it on a free loopback port.

    Raises:
        RuntimeError: ``initdb``/``pg_ctl`` are missing or the server did not start in 60 s.
    """
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL's initdb and pg_ctl are needed on PATH for these tests")
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, _USER, _USER)
    data = base / "data"
    subprocess.run(
        _as_postgres(initdb, "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8",
                     "--no-sync", "--no-instructions"),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = _free_port()
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
        "-c shared_buffers=64MB"
    )
    subprocess.run(
        _as_postgres(pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w",
                     "-t", "60", "start"),
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    return PgServer("127.0.0.1", port, data), None


def stop_server(server: PgServer) -> None:
    """Stop the server fast (``pg_ctl stop -m immediate``); errors are ignored."""
    pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
    subprocess.run(
        _as_postgres(pg_ctl, "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for this test process (an xdist worker), removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    os.chmod(base, 0o755)
    server, _ = start_server(base / "pg")
    try:
        yield server
    finally:
        stop_server(server)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server; yields its DSN and drops it after."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name}")
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
