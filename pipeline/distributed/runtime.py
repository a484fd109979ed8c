"""What the workflows of one worker process share: the store, the API keys, adapters, storage.

A process sets it up once (:func:`install`) before DBOS launches; the workflow steps reach it
with :func:`current`. Adapters and object stores are built on first use, on DBOS's event loop
(the one every async workflow of the process runs on), one per provider settings and store.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from aiolimiter import AsyncLimiter

from pipeline.distributed.intent import Submits
from pipeline.distributed.liveness import live_executors
from pipeline.engine import pollsched
from pipeline.journal.pgjournal import PgJournal
from pipeline.providers import PROVIDERS
from pipeline.providers.base import Provider, ProviderContext
from pipeline.settings import DownloadSettings, ProviderSettings, StorageSettings
from pipeline.transfer.storage import ObjectStorage

log = logging.getLogger("pipeline")

#: A worker's work directory is ``<temp dir>/pipeline-worker-XXXXXXXX``.
WORKDIR_PREFIX = "pipeline-worker-"
#: The file in it that its worker holds an exclusive lock on (``flock``) while it lives.
OWNER_LOCK = ".owner.lock"
#: A work directory younger than this is never taken for a dead worker's (s).
_STALE_AFTER_S = 60.0
#: How often a process counts the live executors that share an account's poll rate (s).
EXECUTORS_EVERY_S = 5.0


def claim_workdir(base: Path | None = None) -> tuple[Path, int]:
    """A new private work directory under ``base`` (default: the temp dir), locked by us.

    Work directories of dead workers (a worker killed mid-download leaves its partial files) are
    removed first: a directory whose owner lock can be taken has no living owner. Directories
    younger than a minute are left alone (their owner may not hold its lock yet).

    Returns:
        ``(directory, fd)``: keep ``fd`` open while the process lives; close it after removing
        the directory.
    """
    base = Path(base or tempfile.gettempdir())
    for old in base.glob(WORKDIR_PREFIX + "*"):
        try:
            if time.time() - old.stat().st_mtime < _STALE_AFTER_S:
                continue
            fd = os.open(old / OWNER_LOCK, os.O_RDWR)
        except OSError:
            continue  # not a worker's directory, or gone meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its worker is alive
        finally:
            os.close(fd)
        log.debug("removing %s, left by a worker that died", old)
        shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=base))
    fd = os.open(path / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return path, fd


@dataclass
class Runtime:
    """One worker process's shared state.

    Attributes:
        journal: the store's run journals.
        submits: submit intents and budgets (:mod:`.intent`).
        keys: environment variable name -> value, for the API keys this worker may use
            (``providers.<name>.api_key_env``); read by the CLI, never written anywhere.
        workdir: a private directory for downloads in progress (removed at :meth:`close`, or
            by the next worker to start on this machine if this one dies: :func:`claim_workdir`).
        stopping: set when the process is stopping: no new paid call starts (a shot about to
            submit waits; it is recovered by another worker once this one exits).
        submits_in_air: paid calls in progress (a stopping process waits for them).
        history: the completion times this process has seen, per provider and model (the
            poll schedule learns from them).
    """

    journal: PgJournal
    submits: Submits
    keys: Mapping[str, str]
    workdir: Path
    stopping: bool = False
    submits_in_air: int = 0
    workdir_fd: int | None = None
    history: pollsched.History = field(default_factory=pollsched.History)
    #: account -> (live executors, polls_per_minute, the limiter made for them)
    _poll_gates: dict[str, tuple[int, float, AsyncLimiter]] = field(default_factory=dict)
    _executors: tuple[float, int] = (-1e9, 1)  # (monotonic time read, live executors)
    _providers: dict[str, Provider] = field(default_factory=dict)
    _stores: dict[str, ObjectStorage] = field(default_factory=dict)

    def provider(
        self, name: str, settings: ProviderSettings, downloads: DownloadSettings, simulate: bool
    ) -> Provider:
        """The adapter for ``name`` with these settings (built once per process).

        Raises:
            KeyError: not a provider of the registry.
        """
        ident = json.dumps(
            [name, settings.model_dump(mode="json"), downloads.model_dump(mode="json"), simulate],
            sort_keys=True,
        )
        cache_key = hashlib.sha256(ident.encode()).hexdigest()
        adapter = self._providers.get(cache_key)
        if adapter is None:
            spec = PROVIDERS[name]
            key = self.keys.get(settings.api_key_env or "") if settings.api_key_env else None
            ctx = ProviderContext(
                name=name,
                settings=settings,
                run_dir=self.workdir,
                api_key=key,
                simulate=simulate,
                downloads=downloads,
            )
            adapter = self._providers[cache_key] = spec.factory(ctx)
        return adapter

    async def poll_gate(self, account: str, polls_per_minute: float | None) -> AsyncLimiter | None:
        """This process's share of an account's ``polls_per_minute``, or None (unlimited).

        Every live executor process takes an equal share: a limiter spacing this process's
        polls ``60 * executors / polls_per_minute`` seconds apart, so that all of them together
        stay at or under the account's rate. The count of live executors is read from the
        store at most every :data:`EXECUTORS_EVERY_S`; a process that cannot read it keeps the
        last count.

        Args:
            account: the account's queue name (``<provider>.<account>``).
            polls_per_minute: the provider's ``polls_per_minute``.
        """
        if polls_per_minute is None:
            return None
        read_at, executors = self._executors
        if time.monotonic() - read_at > EXECUTORS_EVERY_S:
            self._executors = (time.monotonic(), executors)  # one reader at a time
            try:
                executors = max(1, await anyio.to_thread.run_sync(self._count_executors))
            except Exception as exc:  # keep the last count; polls go on
                log.debug("counting executors: %s", exc)
            self._executors = (time.monotonic(), executors)
        made = self._poll_gates.get(account)
        if made is not None and made[:2] == (executors, polls_per_minute):
            return made[2]
        gate = AsyncLimiter(1, 60.0 * executors / polls_per_minute)  # a new share: a new limiter
        if made is not None:
            # It replaces one that may just have let a poll go, and a limiter starts full: it
            # starts spent instead, so a change of the count never lets an extra poll through.
            await gate.acquire()
        self._poll_gates[account] = (executors, polls_per_minute, gate)
        return gate

    def _count_executors(self) -> int:
        with self.journal.pooled() as conn:
            return live_executors(conn)

    def storage(self, settings: StorageSettings) -> ObjectStorage:
        """The object storage of a manifest's ``storage`` section (built once per process).

        Raises:
            ManifestError: the URL or TTL is not usable.
        """
        ident = json.dumps(settings.model_dump(mode="json"), sort_keys=True)
        store = self._stores.get(ident)
        if store is None:
            store = self._stores[ident] = ObjectStorage(settings, file="the run's manifest")
        return store

    async def aclose(self) -> None:
        """Close every adapter (on DBOS's loop, where they were built)."""
        adapters, self._providers = list(self._providers.values()), {}
        for adapter in adapters:
            try:
                await adapter.aclose()
            except Exception as exc:  # closing must not hide the shutdown's real outcome
                log.debug("closing %s: %s", adapter.name, exc)

    def close(self) -> None:
        """Close the journal's connection and remove the work directory."""
        self.journal.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.workdir_fd is not None:
            os.close(self.workdir_fd)
            self.workdir_fd = None


_CURRENT: Runtime | None = None


def install(dsn: str, keys: Mapping[str, str]) -> Runtime:
    """Set up this process's runtime for the store ``dsn`` with these API key variables."""
    global _CURRENT
    journal = PgJournal(dsn)
    workdir, fd = claim_workdir()
    _CURRENT = Runtime(
        journal=journal,
        submits=Submits(journal),
        keys=dict(keys),
        workdir=workdir,
        workdir_fd=fd,
    )
    return _CURRENT


def current() -> Runtime:
    """The runtime :func:`install` set up.

    Raises:
        RuntimeError: none was installed in this process.
    """
    if _CURRENT is None:
        raise RuntimeError("pipeline.distributed.runtime.install() was not called")
    return _CURRENT


def uninstall(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Close the runtime (adapters on ``loop`` if given and running), then forget it."""
    global _CURRENT
    rt, _CURRENT = _CURRENT, None
    if rt is None:
        return
    if loop is not None and loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(rt.aclose(), loop).result(timeout=10)
        except Exception as exc:
            log.debug("closing adapters: %s", exc)
    rt.close()
