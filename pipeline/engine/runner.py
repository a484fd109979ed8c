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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from pipeline._util.redaction import scrub
from pipeline.engine import repair
from pipeline.engine.budget import Spend
from pipeline.engine.limits import ProviderGate
from pipeline.engine.preflight import preflight, render_problems
from pipeline.engine.progress import NullObserver, Observer
from pipeline.engine.stages import RunContext, ShotMachine
from pipeline.errors import CheckpointError, ManifestError, ProviderError, UsageError
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE as CHECKPOINT_FILE
from pipeline.journal.checkpoint import Checkpoint, Record
from pipeline.journal.state import RunState, ShotRecord, apply, folder
from pipeline.manifest.loader import Manifest
from pipeline.models import TERMINAL_STATES, Event, JobHandle, Shot, ShotState
from pipeline.providers import PROVIDERS
from pipeline.providers.base import Provider, ProviderContext, ProviderSpec, SupportsCancel
from pipeline.settings import ProviderSettings
from pipeline.transfer.storage import ObjectStorage
from pipeline.transfer.upload import MediaResolver

log = logging.getLogger("pipeline")

#: How often the runner looks at what shots wait on, and repeats a lasting wait in the log (s).
WAIT_CHECK_S, WAIT_REPORT_S = 5.0, 30.0
#: How often ``--wait`` checks again for providers or storage unreachable at start (s).
PREFLIGHT_RETRY_S = 15.0

EXIT_OK, EXIT_ATTENTION, EXIT_INPUT, EXIT_CHECKPOINT, EXIT_LOCKED, EXIT_INTERRUPTED = (
    0,
    1,
    2,
    3,
    4,
    130,
)


@dataclass(frozen=True)
class RunOptions:
    """How to run.

    Attributes:
        api_keys: provider name -> API key (read from the environment by the CLI only).
        base_urls: provider name -> base URL override (``--simulate`` points these at the sims).
        simulate: talking to the in-process simulators (loopback result URLs allowed).
        retry_failed: give failed shots a new attempt.
        resubmit_ambiguous: shot ids (or ``{"*"}``) whose ambiguous submit may be paid again.
        observer: progress display.
        registry: provider specs by name (tests inject fakes; default: the built-in registry).
        overrides: provider name -> settings that win over the manifest (``--simulate`` uses
            short poll intervals against the simulators).
        max_usd: spend limit overriding the manifest's ``budget.max_usd`` (``--max-usd``).
        only: when set, ``retry_failed`` and ``resubmit_ambiguous`` apply to these shots only.
        preflight: check before the first paid call that every provider and the object
            storage answer and accept their credentials (:mod:`pipeline.engine.preflight`); the CLI
            always does, tests that inject fake providers need not.
        wait_s: how long to wait for providers or storage that cannot be reached at start
            (``--wait``), checking again every :data:`PREFLIGHT_RETRY_S`; 0 stops at once.
    """

    api_keys: Mapping[str, str] = field(default_factory=dict)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    simulate: bool = False
    retry_failed: bool = False
    resubmit_ambiguous: frozenset[str] = frozenset()
    observer: Observer = field(default_factory=NullObserver)
    registry: Mapping[str, ProviderSpec] = field(default_factory=lambda: PROVIDERS)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_usd: float | None = None
    only: frozenset[str] | None = None
    preflight: bool = False
    wait_s: float = 0.0


@dataclass
class RunResult:
    """Outcome of :func:`execute`: the final replayed state, the spend and the exit code."""

    state: RunState
    shots: tuple[Shot, ...]
    interrupted: bool = False
    exit_code: int = EXIT_OK
    orphans: tuple[str, ...] = ()
    spend: Spend = field(default_factory=Spend)


def provider_settings(
    manifest: Manifest,
    name: str,
    base_url: str | None = None,
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
    overrides: Mapping[str, Any] | None = None,
) -> ProviderSettings:
    """Manifest settings for ``name`` merged over the adapter's defaults, then the overrides."""
    spec = registry[name]
    merged = manifest.providers.get(name, ProviderSettings()).merged(spec.defaults)
    update = dict(overrides or {})
    if base_url:
        update["base_url"] = base_url
    return merged.model_copy(update=update) if update else merged


def _needs_work(rec: ShotRecord | None, options: RunOptions) -> bool:
    if rec is None:
        return True
    chosen = options.only is None or rec.id in options.only
    if rec.state == ShotState.FAILED:
        return options.retry_failed and chosen
    if rec.state == ShotState.NEEDS_RECONCILE:
        return chosen and bool({"*", rec.id} & options.resubmit_ambiguous)
    return rec.state != ShotState.CANCELLED


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
        try:
            async with AsyncExitStack() as stack:
                providers = {n: await stack.enter_async_context(self._provider(n)) for n in names}
                settings = {n: self._settings(n) for n in names}
                ctx = RunContext(
                    run_id=run_id,
                    run_dir=self.ckpt.run_dir,
                    append=self._append,
                    providers=providers,
                    gates={n: ProviderGate(n, settings[n]) for n in names},
                    settings=settings,
                    downloads=self.manifest.downloads,
                    observer=observer,
                    options=self.options,
                    media=self._media_resolver(settings),
                    spend=self.spend,
                    policies={n: self.options.registry[n].media for n in names},
                )
                await self._run_all(ctx, todo, state)
        finally:
            observer.finished()
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
            storage = ObjectStorage(self.manifest.storage, file=str(self.manifest.path))
        longest = max((s.poll_deadline_s or 3600.0 for s in settings.values()), default=3600.0)
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
                    window = 2 * (ctx.settings[name].max_in_flight or 4) + 16
                    self._feed(work, ctx, shots, state, window)
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
            for shot in queue:
                rec = state.shots.get(shot.id)
                await ShotMachine(ctx, shot, copy.copy(rec) if rec else None).run()

        for _ in range(min(window, len(shots))):
            work.start_soon(worker)

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
        elif all(st == ShotState.DONE for st in states) and len(states) == len(shots):
            code = EXIT_OK
        else:
            code = EXIT_ATTENTION
        return RunResult(final, shots, self.interrupted, code, orphans, self.spend)


async def open_run(run_dir: Path, *, simulate: bool) -> tuple[Checkpoint, RunState]:
    """Open (lock, repair) ``run_dir``'s checkpoint and replay it while it is read.

    The replay starts from the run's state snapshot when it is usable (only the log after it is
    read and folded; see :mod:`pipeline.journal.snapshot`), else from the first record. A rehearsal
    and a
    real run never share a run directory (:func:`check_mode`): the lock is released and nothing
    is written when the modes differ.

    Args:
        run_dir: the run directory (created when missing).
        simulate: whether this command talks to the simulators (``--simulate``).

    Raises:
        LockedError / CheckpointError: as :meth:`Checkpoint.open`.
        UsageError: the run was started in the other mode.
    """
    state = RunState()
    prefix = snapshot.prefix_into(state, run_dir / CHECKPOINT_FILE)
    ckpt = await Checkpoint.open(run_dir, fold=folder(state), prefix=prefix)
    try:
        check_mode(state, run_dir, simulate=simulate)
    except UsageError:
        with anyio.CancelScope(shield=True), contextlib.suppress(CheckpointError):
            await ckpt.close()
        raise
    return ckpt, state


def check_mode(state: RunState, run_dir: Path, *, simulate: bool) -> None:
    """Refuse to continue a rehearsal as a real run, or a real run as a rehearsal.

    A ``--simulate`` run's job ids, prices and videos come from simulators: polled at a real
    provider with a real key they would at best fail, and its pending shots would be paid for
    as if the rehearsal's clips were real outputs. A real run's jobs are unknown to simulators.

    Raises:
        UsageError: naming the run's mode and how to start a run of the other kind.
    """
    if state.simulated is None or state.simulated == simulate:
        return
    if state.simulated:
        raise UsageError(
            f"{run_dir} is a rehearsal (started with --simulate): its jobs and videos come from "
            "simulators, so it can only be continued with --simulate. For a real run, use "
            f"another run directory: pipeline run MANIFEST --jobs-dir DIR (or remove {run_dir})"
        )
    raise UsageError(
        f"{run_dir} is a real run (its jobs were sent to the providers), so it cannot be "
        "continued with --simulate. To rehearse, use another run directory: "
        "pipeline run MANIFEST --simulate --jobs-dir DIR"
    )


async def execute(manifest: Manifest, run_dir: Path, options: RunOptions) -> RunResult:
    """Run (or continue) ``manifest`` in ``run_dir``.

    Raises:
        ManifestError: a provider needs an API key that is not set.
        CheckpointError: the checkpoint is locked, corrupt, or a write failed (fail-stop); or
            it does not know verified videos in ``shots/``
            (:func:`pipeline.engine.repair.check_outputs`).
    """

    async def ready_to_pay() -> None:
        _check_keys(manifest, options)
        if options.preflight:
            await _preflight(manifest, options, run_dir)

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


async def _preflight(manifest: Manifest, options: RunOptions, run_dir: Path) -> None:
    """Check every service the run needs before the first paid call (pipeline.engine.preflight).

    Waits up to ``options.wait_s`` for what is unreachable (saying so every
    :data:`PREFLIGHT_RETRY_S`), never for a refused key or a wrong setting.

    Raises:
        UsageError: the problems that remain, as text naming each service and what was tried.
    """
    until = time.monotonic() + options.wait_s
    while True:
        problems = await preflight(
            manifest,
            api_keys=options.api_keys,
            base_urls=options.base_urls,
            registry=options.registry,
            simulate=options.simulate,
            run_dir=run_dir,
        )
        if not problems:
            return
        left = until - time.monotonic()
        if left <= 0 or any(p.kind != "unreachable" for p in problems):
            hint = "" if options.wait_s else "\n(--wait SECONDS waits for what is unreachable)"
            raise UsageError(render_problems(problems) + hint)
        names = ", ".join(p.subject for p in problems)
        log.warning("waiting for %s to answer (up to %.0f s more): %s", names, left, problems[0])
        await anyio.sleep(min(PREFLIGHT_RETRY_S, left))


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Surface a CheckpointError from inside task groups as itself (fail-stop)."""
    match = group.subgroup(lambda e: isinstance(e, CheckpointError))
    if match is not None:
        leaf: BaseException = match
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


def _check_keys(manifest: Manifest, options: RunOptions) -> None:
    """Refuse to start when a provider in use has no API key or no base URL.

    Raises:
        ManifestError: naming each missing key variable / ``providers.<name>.base_url``.
    """
    missing = []
    for name in sorted({s.provider for s in manifest.shots}):
        spec = options.registry[name]
        settings = provider_settings(manifest, name, options.base_urls.get(name), options.registry)
        if spec.needs_api_key and not options.api_keys.get(name):
            env = settings.api_key_env or "?"
            missing.append(f"{name}: set the environment variable {env} (or run with --simulate)")
        if spec.needs_api_key and not settings.base_url:
            missing.append(f"{name}: set providers.{name}.base_url to your gateway's URL")
    if not options.simulate:
        missing.extend(_plain_http_media(manifest))
    if missing:
        raise ManifestError.single(
            str(manifest.path), None, "providers", "cannot start: " + "; ".join(missing)
        )


def _plain_http_media(manifest: Manifest) -> list[str]:
    """Real providers fetch media over https only; plain http is for ``--simulate`` rehearsals."""
    out = []
    storage = manifest.storage
    if storage is not None and (storage.endpoint_url or "").startswith("http://"):
        uses = any(s.provider != "local" and any(a.path for a in s.assets) for s in manifest.shots)
        if uses:
            out.append(
                f"storage.endpoint_url {storage.endpoint_url} is plain http: providers could not "
                "fetch its presigned URLs (use an https endpoint, or --simulate)"
            )
    for shot in manifest.shots:
        for asset in shot.assets:
            if asset.url is not None and asset.url.startswith("http://"):
                out.append(f"{shot.id}: {asset.url.split('?')[0]} is plain http (https only)")
    return out


async def cancel(
    manifest: Manifest, run_dir: Path, options: RunOptions, shots: frozenset[str] | None = None
) -> RunResult:
    """Cancel unfinished shots (all, or the ids in ``shots``) and record ``cancelled``.

    Jobs already at a provider are cancelled there when the adapter supports it
    (:class:`~pipeline.providers.base.SupportsCancel`); otherwise the shot is still recorded as
    cancelled locally and the message says the provider may finish (and charge) the job.

    Raises:
        ManifestError: an id in ``shots`` is not in the run.
        UsageError: the run was started in the other mode (``options.simulate``).
        CheckpointError: lock or write failure.
    """
    ckpt, state = await open_run(run_dir, simulate=options.simulate)
    try:
        unknown = sorted((shots or frozenset()) - set(state.shots))
        if unknown:
            raise ManifestError.single(
                str(manifest.path), None, "--shot", f"not in this run: {', '.join(unknown)}"
            )
        runner = Runner(manifest, ckpt, options, state)
        by_id = {s.id: s for s in manifest.shots}
        async with AsyncExitStack() as stack:
            providers: dict[str, Provider] = {}
            for rec in state.shots.values():
                if (shots and rec.id not in shots) or rec.state in TERMINAL_STATES:
                    continue
                note = "cancelled before submit"
                name = by_id[rec.id].provider if rec.id in by_id else rec.provider
                if rec.job is not None and options.simulate and name not in options.base_urls:
                    # The rehearsal's simulators are gone with the process that ran them.
                    note = "cancelled (rehearsal: its job was in a simulator, nothing is charged)"
                elif rec.job is not None and rec.id in by_id:
                    if name not in providers:
                        providers[name] = await stack.enter_async_context(runner._provider(name))
                    note = await _cancel_job(providers[name], rec.job)
                await runner._append(Event.CANCELLED, rec.id, reason=note)
        return runner._result(runner.state)
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(CheckpointError):
            await ckpt.close()


async def _cancel_job(provider: Provider, job: JobHandle) -> str:
    if not isinstance(provider, SupportsCancel):
        return f"cancelled locally; {job.provider} has no cancel API, the job may still be charged"
    try:
        await provider.cancel(job)
    except ProviderError as exc:
        return f"cancel at {job.provider} failed ({exc}); the job may still be charged"
    return f"cancelled at {job.provider}"


async def adopt(
    run_dir: Path, shot_id: str, job_id: str, *, file: str, simulate: bool = False
) -> None:
    """Attach ``job_id`` (found on the provider's dashboard) to ``shot_id``: polled next run.

    For a shot whose submit outcome is unknown (``needs_reconcile``) or that failed: the next
    ``resume`` polls that job and fetches its video instead of paying for a new one.

    Raises:
        ManifestError: no such shot, or it is done or already has a job in progress.
        UsageError: the run was started in the other mode (``simulate``).
        CheckpointError: lock or write failure.
    """
    ckpt, state = await open_run(run_dir, simulate=simulate)
    try:
        rec = state.shots.get(shot_id)
        if rec is None:
            raise ManifestError.single(file, None, "SHOT", f"{shot_id!r} is not in this run")
        busy = rec.state in (ShotState.POLLING, ShotState.FETCHING) and rec.job is not None
        if rec.state == ShotState.DONE or busy:
            job = rec.job.job_id if rec.job else "-"
            raise ManifestError.single(
                file, None, "SHOT", f"{shot_id} is {rec.state.value} (job {job}); nothing to adopt"
            )
        await ckpt.append(
            Event.SUBMITTED, shot_id, job=job_id, prov=rec.provider, model=rec.model, adopted=True
        )
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(CheckpointError):
            await ckpt.close()
