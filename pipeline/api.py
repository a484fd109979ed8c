"""The library face: drive a batch from Python (a notebook, another tool) without the CLI.

::

    import pipeline

    manifest = pipeline.load_manifest("samples/storyboard.yaml")
    result = await pipeline.run(manifest)                 # jobs/<name>/ by default
    result = await pipeline.resume("jobs/storyboard")     # after an interruption
    state = pipeline.status("jobs/storyboard")            # RunState: .shots[id].state ...

``run`` and ``resume`` are coroutines (asyncio): ``await`` them in a notebook, or wrap them in
``asyncio.run`` / ``anyio.run`` in a script. The CLI's ``run``, ``resume`` and ``status`` call
these same functions.

Keys and endpoints are the caller's: pass ``RunOptions(api_keys={"venice": key})``; nothing here
reads the environment. A manifest's ``providers.<name>.base_url`` is used as written; for a
manifest someone else wrote, check it first with :func:`pipeline.cli.endpoints.check` (what
the CLI does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CheckpointError, ManifestError, UsageError
from pipeline.journal.checkpoint import FILE as CHECKPOINT
from pipeline.journal.snapshot import load_state

if TYPE_CHECKING:
    from pipeline.engine.options import RunOptions, RunResult
    from pipeline.journal.state import RunState
    from pipeline.manifest.loader import Manifest

# :func:`status` reads a journal and nothing else, so that ``pipeline status`` starts fast: the
# engine, the manifest loader, the simulators and the outputs (PyAV, Pillow, aiohttp...) are
# imported by the functions that use them, on first call.

#: Poll the simulators often: their jobs take seconds, not minutes.
SIM_POLLING = {"poll_min_s": 0.2, "poll_max_s": 1.0}


async def run(
    manifest: Manifest | str | Path,
    run_dir: str | Path | None = None,
    *,
    jobs_dir: str | Path = "jobs",
    options: RunOptions | None = None,
    simulate: bool = False,
    outputs: bool = True,
    announce: Callable[[Mapping[str, str]], None] | None = None,
) -> RunResult:
    """Run (or continue) a manifest; return the final state, the spend and the exit code.

    Args:
        manifest: a loaded :class:`Manifest`, or the path of its YAML file.
        run_dir: where the run lives (default ``<jobs_dir>/<manifest name>``).
        jobs_dir: parent of the default run directory.
        options: keys, retry flags, observer, budget... (:class:`RunOptions`).
        simulate: rehearse against in-process simulators of the providers and of the object
            storage (:mod:`pipeline.sim.objectstore`): no account, no bucket, no spend (the run
            directory is marked as a rehearsal and only ever continued as one).
        outputs: write the storyboard page, contact sheet, animatic and report afterwards.
        announce: called with ``{provider: base URL}`` of the simulators once they listen
            (and ``"storage"``: the simulated store's endpoint, when the manifest has storage).

    Returns:
        The :class:`RunResult`; ``exit_code`` 0 when every shot is done, 1 when some need
        attention, 130 when interrupted.

    Raises:
        ManifestError: invalid manifest, or a provider without its key (nothing was sent).
        UsageError: the run directory was started in the other mode (``simulate``).
        CheckpointError: the journal is locked, damaged or cannot be written (fail-stop).
    """
    from pipeline.engine.options import RunOptions
    from pipeline.engine.runner import execute
    from pipeline.manifest.loader import Manifest, load_manifest
    from pipeline.outputs.write import write_outputs

    loaded = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    where = Path(run_dir) if run_dir is not None else Path(jobs_dir) / loaded.name
    opts = options or RunOptions()
    if simulate:
        result = await _simulated(loaded, where, opts, announce)
    else:
        result = await execute(loaded, where, opts)
    if outputs and (where / CHECKPOINT).exists():
        write_outputs(where, loaded)
    return result


async def resume(
    run_dir: str | Path,
    *,
    options: RunOptions | None = None,
    simulate: bool = False,
    outputs: bool = True,
) -> RunResult:
    """Continue an interrupted run in ``run_dir`` with the manifest its journal names.

    Nothing already paid for is paid again: shots with a job are polled, shots whose submit
    outcome is unknown wait for the user (``needs_reconcile``).

    Raises:
        CheckpointError: ``run_dir`` has no journal, or it names no manifest.
        ManifestError, UsageError: as :func:`run`.
    """
    return await run(
        manifest_of(run_dir), run_dir, options=options, simulate=simulate, outputs=outputs
    )


def manifest_of(run_dir: str | Path) -> Manifest:
    """The manifest the journal in ``run_dir`` names, loaded again from its file.

    Raises:
        UsageError: ``run_dir`` is not a run directory.
        CheckpointError: the journal is lost (videos without it) or names no manifest.
        ManifestError: the manifest is gone or no longer valid.
    """
    from pipeline.engine.repair import lost_log_message
    from pipeline.manifest.loader import load_manifest

    named = status(run_dir).manifest
    if not named:
        lost = lost_log_message(Path(run_dir))
        raise CheckpointError(lost or f"{Path(run_dir) / CHECKPOINT} does not name its manifest")
    if not Path(named).is_file():
        raise ManifestError.single(
            named, None, "", "the run's manifest is gone; restore it or run another"
        )
    return load_manifest(named)


def status(run_dir: str | Path) -> RunState:
    """Where every shot of the run in ``run_dir`` stands (read-only; a running run is fine).

    Returns:
        The replayed :class:`RunState`: ``.shots`` maps shot id to its record (``state``,
        ``job``, ``error``, ``output``...).

    Raises:
        UsageError: ``run_dir`` does not exist or holds no journal (and no videos).
        CheckpointError: the journal is lost while videos remain (``pipeline repair``
            rebuilds it), or it cannot be read safely.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.is_file():
        from pipeline.engine.repair import lost_log_message

        lost = lost_log_message(run_dir)
        if lost is not None:
            raise CheckpointError(lost)
        what = (
            "does not exist"
            if not run_dir.exists()
            else f"is not a run directory (no {CHECKPOINT})"
        )
        raise UsageError(f"{run_dir} {what}; run directories are made by `pipeline run MANIFEST`")
    return load_state(path)


async def _simulated(
    manifest: Manifest,
    run_dir: Path,
    options: RunOptions,
    announce: Callable[[Mapping[str, str]], None] | None,
) -> RunResult:
    """:func:`execute` against in-process simulators of its providers and of its storage.

    Every provider the manifest uses is served by its simulator, and its object storage (when
    it has some) by the simulated store (:mod:`pipeline.sim.objectstore`): no bucket, no
    ``AWS_*`` variable, no other process.
    """
    from pipeline import sim
    from pipeline.engine.runner import execute
    from pipeline.sim import objectstore
    from pipeline.transfer.storage import StoreAccess

    async with AsyncExitStack() as stack:
        sims = await stack.enter_async_context(sim.running({s.provider for s in manifest.shots}))
        urls = {name: served.base_url for name, served in sims.items()}
        access = None
        if manifest.storage is not None:
            store = await stack.enter_async_context(objectstore.running())
            access = StoreAccess(
                store.endpoint_url, store.access_key_id, store.secret_access_key, store.region
            )
        if urls and announce is not None:
            announce({**urls, "storage": access.endpoint_url} if access else urls)
        options = replace(
            options,
            simulate=True,
            base_urls={**options.base_urls, **urls},
            api_keys={**options.api_keys, **dict.fromkeys(sims, sim.SIM_KEY)},
            overrides={**dict.fromkeys(sims, SIM_POLLING), **options.overrides},
            storage_access=access,
        )
        return await execute(manifest, run_dir, options)
