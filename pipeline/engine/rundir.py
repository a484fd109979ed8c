"""Opening a run directory: the lock, the replayed journal and the run's mode."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import anyio.abc

from pipeline.errors import CheckpointError, UsageError
from pipeline.journal import snapshot
from pipeline.journal.checkpoint import FILE as CHECKPOINT_FILE
from pipeline.journal.checkpoint import Checkpoint
from pipeline.journal.state import RunState, folder


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
