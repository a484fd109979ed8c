"""The user's actions on a run's shots outside a run: cancel them, adopt a job found by hand."""

from __future__ import annotations

import contextlib
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc

from pipeline.engine.options import (
    RunOptions,
    RunResult,
)
from pipeline.engine.rundir import open_run
from pipeline.engine.runner import Runner
from pipeline.errors import CheckpointError, ManifestError, ProviderError
from pipeline.manifest.loader import Manifest
from pipeline.models import TERMINAL_STATES, Event, JobHandle, ShotState
from pipeline.providers.base import Provider, SupportsCancel


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
