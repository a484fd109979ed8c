"""The batch runner: plan the manifest against the checkpoint, then drive every shot concurrently.

::

    execute(manifest, run_dir, options)
      ├─ Checkpoint.open(run_dir)            lock, load, repair the torn tail
      ├─ replay -> per-shot state            what is already done is never repeated
      ├─ plan: shot_planned for new/changed fingerprints
      ├─ one provider adapter + one ProviderGate per provider in use
      └─ one anyio task group: ShotMachine(shot).run() per shot with work left
             upload -> submit -> poll -> fetch   (pipeline.engine.stages)

Signals: the first SIGINT/SIGTERM cancels the work; submits already on the wire are shielded so
their outcome is recorded; the run ends ``interrupted`` (exit 130). A checkpoint error anywhere
is fail-stop: no further paid call, exit 3.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc

from pipeline._util.redaction import scrub
from pipeline.engine import pollsched, repair, startchecks
from pipeline.engine.budget import Spend
from pipeline.engine.clock import Clock
from pipeline.engine.context import RunContext
from pipeline.engine.limits import ProviderGate
from pipeline.engine.options import (
    EXIT_ATTENTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunOptions,
    RunResult,
    provider_settings,
)
from pipeline.engine.rundir import open_run
from pipeline.engine.stages import ShotMachine
from pipeline.errors import CheckpointError
from pipeline.journal import inbox, snapshot, snapshotter
from pipeline.journal.checkpoint import FILE as CHECKPOINT_FILE
from pipeline.journal.checkpoint import Checkpoint, Record
from pipeline.journal.state import RunState, ShotRecord, apply
from pipeline.manifest.loader import Manifest
from pipeline.manifest.takes import resolver, with_rerolls
from pipeline.models import Event, Shot, ShotState
from pipeline.providers.base import Provider, ProviderContext
from pipeline.settings import ProviderSettings
from pipeline.transfer.storage import ObjectStorage
from pipeline.transfer.upload import MediaResolver

log = logging.getLogger("pipeline")

#: How often the runner looks at what shots wait on, and repeats a lasting wait in the log (s).
WAIT_CHECK_S, WAIT_REPORT_S = 5.0, 30.0
#: How often a running runner appends the review requests queued in ``RUN_DIR/inbox`` (s).
INBOX_CHECK_S = 1.0


def _needs_work(rec: ShotRecord | None, options: RunOptions) -> bool:
    if rec is None:
        return True
    chosen = options.only is None or rec.id in options.only
    if rec.state == ShotState.FAILED:
        return options.retry_failed and chosen
    if rec.state == ShotState.NEEDS_RECONCILE:
        return chosen and bool({"*", rec.id} & options.resubmit_ambiguous)
    if rec.state == ShotState.CANCELLED:  # cancelled on purpose: only when named with --shot
        return options.retry_failed and options.only is not None and rec.id in options.only
    return True


#: Where a shot may end without the run needing attention (exit 0).
_SETTLED = frozenset({ShotState.DONE, ShotState.CANCELLED})


class Runner:
    """One run of a manifest over an open checkpoint. Use :func:`execute`."""

    def __init__(
        self, manifest: Manifest, ckpt: Checkpoint, options: RunOptions, state: RunState
    ) -> None:
        self.manifest = manifest
        self.ckpt = ckpt
        self.options = options
        self.interrupted = False
        self.spend = Spend()
        # The live state: the loaded log replayed (see open_run), then every record this run
        # appends folded in as it is written (no records are kept: memory stays flat).
        self.state = state
        self._busy = 0  # shot workers alive; the inbox watcher ends with the last of them
        self._idle = anyio.Event()

    async def run(self) -> RunResult:
        """Plan, then run every shot with work left. Raises CheckpointError on fail-stop."""
        state = self.state
        run_id = state.run_id or uuid.uuid4().hex[:16]
        await self._append(
            Event.RUN_STARTED,
            None,
            run=run_id,
            manifest=str(self.manifest.path),
            simulate=self.options.simulate,
        )
        await self._take_requests()  # review requests queued while no runner held the run
        self.manifest = with_rerolls(self.manifest, state)  # re-rolled takes are shots to run
        self._plan(state)
        await self.ckpt.sync()
        limit = self.options.max_usd
        self.spend = Spend.of(state, limit if limit is not None else self.manifest.budget.max_usd)
        todo = [s for s in self.manifest.shots if _needs_work(state.shots.get(s.id), self.options)]
        names = sorted({s.provider for s in todo})
        observer = self.options.observer
        observer.started(todo, {sid: rec.state for sid, rec in state.shots.items()})
        if self.spend.limit_usd is not None or self.spend.committed_usd:
            observer.spending(self.spend.committed_usd, self.spend.limit_usd)
        history: pollsched.History | None = None
        try:
            async with AsyncExitStack() as stack, snapshotter.periodic(self.ckpt):
                providers = {n: await stack.enter_async_context(self._provider(n)) for n in names}
                settings = {n: self._settings(n) for n in names}
                clock = Clock()  # one clock for every gate, breaker and poll loop of the run
                history = pollsched.History(
                    self.options.history_path, simulated=self.options.simulate
                )
                ctx = RunContext(
                    run_id=run_id,
                    run_dir=self.ckpt.run_dir,
                    append=self._append,
                    providers=providers,
                    gates={n: ProviderGate(n, settings[n], clock) for n in names},
                    settings=settings,
                    downloads=self.manifest.downloads,
                    observer=observer,
                    options=self.options,
                    media=self._media_resolver(settings),
                    spend=self.spend,
                    policies={n: self.options.registry[n].media for n in names},
                    history=history,
                )
                await self._run_all(ctx, todo, state)
        finally:
            observer.finished()
            if history is not None:
                await anyio.to_thread.run_sync(history.save)  # never raises
        if not self.interrupted:
            await self._append(Event.RUN_FINISHED, None)  # durable: synced
            await snapshot.after_run(self.ckpt, self.state)  # never raises
        return self._result(self.state)

    def _plan(self, state: RunState) -> None:
        items = []
        for shot in self.manifest.shots:
            rec = state.shots.get(shot.id)
            if rec is None or rec.fingerprint != shot.fingerprint:
                fields = {"fp": shot.fingerprint, "prov": shot.provider, "model": shot.model}
                items.append((Event.SHOT_PLANNED, shot.id, fields))
        if items:
            for record in self.ckpt.append_many(items):
                apply(self.state, record)

    async def _append(
        self,
        ev: Event,
        shot: str | None,
        /,
        *,
        then: Callable[[], None] | None = None,
        **fields: object,
    ) -> Record:
        # Redaction at the edge, by value: whatever a provider said (failure reasons, messages,
        # echoed requests) loses every registered key before the checkpoint, and so every
        # output made from it, ever sees it.
        clean = {name: scrub(value) for name, value in fields.items()}
        record = await self.ckpt.append(ev, shot, then=then, **clean)
        apply(self.state, record)
        return record

    def _media_resolver(self, settings: Mapping[str, ProviderSettings]) -> MediaResolver:
        """Object storage (when the manifest has some) and how long presigned URLs must last."""
        storage = None
        if self.manifest.storage is not None:
            storage = ObjectStorage(
                self.manifest.storage,
                file=str(self.manifest.path),
                access=self.options.storage_access,
            )
        longest = max((s.poll_deadline_s for s in settings.values()), default=0.0)
        return MediaResolver(storage=storage, min_validity_s=longest + 600.0)

    def _settings(self, name: str) -> ProviderSettings:
        return provider_settings(
            self.manifest,
            name,
            self.options.base_urls.get(name),
            self.options.registry,
            self.options.overrides.get(name),
        )

    def _provider(self, name: str) -> Provider:
        spec = self.options.registry[name]
        settings = self._settings(name)
        ctx = ProviderContext(
            name=name,
            settings=settings,
            run_dir=self.ckpt.run_dir,
            api_key=self.options.api_keys.get(name),
            simulate=self.options.simulate,
            downloads=self.manifest.downloads,
        )
        return spec.factory(ctx)

    async def _run_all(self, ctx: RunContext, todo: list[Shot], state: RunState) -> None:
        by_provider: dict[str, list[Shot]] = {}
        for shot in todo:
            by_provider.setdefault(shot.provider, []).append(shot)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._watch_signals, outer.cancel_scope)
            outer.start_soon(self._report_waits, ctx)
            async with anyio.create_task_group() as work:
                for name, shots in by_provider.items():
                    window = 2 * ctx.settings[name].max_in_flight + 16
                    self._feed(work, ctx, shots, state, window)
                work.start_soon(self._watch_requests, work, ctx, state)
            self.options.observer.waiting("")  # nothing waits any more
            outer.cancel_scope.cancel()

    def _feed(
        self,
        work: anyio.abc.TaskGroup,
        ctx: RunContext,
        shots: list[Shot],
        state: RunState,
        window: int,
    ) -> None:
        """Run the shots of one provider in order with ``window`` workers.

        Each worker takes the next shot from one shared iterator and drives it to the end, so
        shots start in manifest order and at most ``window`` are alive. Twice the provider's job
        slots (plus a margin) keeps every slot busy and uploads a little ahead, without a task
        per shot for batches of 100,000; one set of workers per provider, so a slow provider
        never holds up another's shots.
        """
        queue = iter(shots)  # shared: next() hands each shot to exactly one worker

        async def worker() -> None:
            try:
                for shot in queue:
                    rec = state.shots.get(shot.id)
                    await ShotMachine(ctx, shot, copy.copy(rec) if rec else None).run()
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

        for _ in range(min(window, len(shots))):
            self._busy += 1
            work.start_soon(worker)

    async def _take_requests(self) -> list[Shot]:
        """Append the review requests queued in ``RUN_DIR/inbox``; returns new re-rolled takes."""
        requests = inbox.pending(self.ckpt.run_dir)
        if not requests:
            return []
        before = set(self.state.rerolls)
        await inbox.drain(self._append, self.state, requests, resolver(self.manifest))
        if set(self.state.rerolls) == before:
            return []
        self.manifest = with_rerolls(self.manifest, self.state)
        return [s for s in self.manifest.shots if s.id in self.state.rerolls.keys() - before]

    async def _watch_requests(
        self, work: anyio.abc.TaskGroup, ctx: RunContext, state: RunState
    ) -> None:
        """Take review requests while shots run; run the re-rolls of providers in use.

        Ends once no shot worker is left (after a last look at the inbox). A re-roll of a
        provider this run does not use waits, pending, for the next run.
        """
        while True:
            new = await self._take_requests()
            ready = [s for s in new if s.provider in ctx.providers]
            for shot in new:
                if shot not in ready:
                    log.warning("%s: re-roll recorded; the next run submits it", shot.id)
            if ready:
                self._plan(state)
                self._idle = anyio.Event()
                self._feed(work, ctx, ready, state, len(ready))
            elif not self._busy:
                return
            with anyio.move_on_after(INBOX_CHECK_S):
                await self._idle.wait()

    async def _report_waits(self, ctx: RunContext) -> None:
        """Say what shots wait on besides their jobs: never a silent wait.

        Checked every :data:`WAIT_CHECK_S`; shown on the progress bars at once and logged when
        it changes, and again at least every :data:`WAIT_REPORT_S` while it lasts.
        """
        said, said_at = "", -math.inf
        while True:
            await anyio.sleep(WAIT_CHECK_S)
            waits = [f"{name}: {w}" for name, gate in ctx.gates.items() for w in gate.waits()]
            text = "; ".join(waits)
            self.options.observer.waiting(text)
            now = time.monotonic()
            if text and (text != said or now - said_at >= WAIT_REPORT_S):
                log.warning("waiting: %s", text)
                said_at = now
            said = text

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.interrupted:
                    continue
                self.interrupted = True
                print(
                    f"\n{signal.Signals(signum).name}: stopping; no new submits, "
                    "recording submits already sent...",
                    file=sys.stderr,
                )
                scope.cancel()

    def _result(self, final: RunState) -> RunResult:
        shots = self.manifest.shots
        ids = {s.id for s in shots}
        orphans = tuple(sid for sid in final.shots if sid not in ids)
        states = [final.shots[s.id].state for s in shots if s.id in final.shots]
        if self.interrupted:
            code = EXIT_INTERRUPTED
        elif all(st in _SETTLED for st in states) and len(states) == len(shots):
            code = EXIT_OK  # a shot cancelled on purpose (or by the provider) needs nothing
        else:
            code = EXIT_ATTENTION
        return RunResult(final, shots, self.interrupted, code, orphans, self.spend)


async def execute(manifest: Manifest, run_dir: Path, options: RunOptions) -> RunResult:
    """Run (or continue) ``manifest`` in ``run_dir``.

    Raises:
        ManifestError: a provider needs an API key that is not set.
        CheckpointError: the checkpoint is locked, corrupt, or a write failed (fail-stop); or
            it does not know verified videos in ``shots/``
            (:func:`pipeline.engine.repair.check_outputs`).
    """

    async def ready_to_pay() -> None:
        startchecks.check_keys(manifest, options)
        if options.preflight:
            await startchecks.wait_for_preflight(manifest, options, run_dir)

    fresh = not (run_dir / CHECKPOINT_FILE).exists()
    if fresh:  # nothing to continue: check before the run directory is even made
        await ready_to_pay()
    ckpt, state = await open_run(run_dir, simulate=options.simulate)
    try:
        # Locked, before any paid call: a truncated or lost log must not pay for videos again.
        await repair.check_outputs(run_dir, state, manifest)
        if not fresh:  # after the mode check: a rehearsal's directory sends nothing anywhere
            await ready_to_pay()
        return await Runner(manifest, ckpt, options, state).run()
    except BaseExceptionGroup as group:
        _reraise_single(group)
        raise
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(CheckpointError):
            await ckpt.close()


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Surface a CheckpointError from inside task groups as itself (fail-stop)."""
    match = group.subgroup(lambda e: isinstance(e, CheckpointError))
    if match is not None:
        leaf: BaseException = match
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
