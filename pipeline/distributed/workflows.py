"""The DBOS workflows of the distributed mode: a run, and each shot's submit -> poll -> fetch.

A **shot workflow** (:func:`shot_workflow`, id ``run/shot/fingerprint``, on its account's
queue) is a chain of DBOS steps; a step's result is recorded in PostgreSQL when it returns, so a
workflow recovered on another worker skips every completed step and re-runs only the one that
was interrupted:

- ``submit`` (:func:`.shotsteps.submit`): the money rules of :mod:`.intent`: intent committed,
  then the paid call, then its outcome; re-run, it finds the intent and never pays again;
- ``poll`` (:func:`.shotsteps.poll`): polls with in-memory waits for up to a minute, then a
  durable sleep (``DBOS.sleep_async``: a recovered workflow sleeps only what is left) before the
  next poll step, until the job ends or its poll deadline (from the submit) passes;
- a submit that provably created nothing (NotSent, 429) is retried by a new shot workflow
  (``<id>/r1``, ``/r2``...) enqueued on the same account queue, so that a retry too passes the
  queue's limiter;
- once the job succeeded, the shot workflow enqueues its **fetch workflow**
  (:func:`fetch_workflow`, id ``<shot workflow id>/fetch``, on the fetch queue) and ends, which
  hands the account's slot back: the video is downloaded and verified in a private directory,
  put in the manifest's object storage, and ``fetched`` recorded with its object URL and sha256,
  while the next shot of the account is already being submitted.

Every transition is also an event of the run's journal (the same events as the JSONL
checkpoint), so ``pipeline status --store`` follows the run live.

A **run workflow** (:func:`run_workflow`) enqueues the shot workflows of a run and waits for them
all, then records ``run_finished``. Its media were prepared by ``pipeline run`` on the machine
that has the files (:mod:`.submitrun`): the tasks it enqueues carry URLs only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from dbos import DBOS, Queue, SetWorkflowID

from pipeline.distributed import shotsteps
from pipeline.distributed.queues import FETCH_QUEUE
from pipeline.distributed.tasks import ShotTask
from pipeline.models import JobStatus, ShotState

#: What a shot workflow returns when its video is left to its fetch workflow.
FETCHING = "fetching"
#: The workflows' registered names.
SHOT_WORKFLOW, FETCH_WORKFLOW = "pipeline.shot", "pipeline.fetch"


#: What a shot workflow returns when its submit went back to the queue (NotSent, 429).
REQUEUED = "requeued"


def fetch_workflow_id(shot_workflow_id: str) -> str:
    """The fetch workflow's id for the shot workflow ``shot_workflow_id``."""
    return f"{shot_workflow_id}/fetch"


def retry_workflow_id(first_id: str, attempt: int) -> str:
    """The id of a shot's workflow for submit attempt ``attempt`` (0: ``first_id`` itself)."""
    return first_id if attempt == 0 else f"{first_id}/r{attempt}"


@DBOS.workflow(name=SHOT_WORKFLOW)
async def shot_workflow(task: dict[str, Any], attempt: int = 0) -> str:
    """Submit and poll one shot, then hand its video to :func:`fetch_workflow`.

    Args:
        task: a :meth:`ShotTask.to_json`.
        attempt: the submit attempt this workflow makes (see :func:`.shotsteps.submit`).

    Returns:
        The shot's final state (a :class:`ShotState` value); :data:`FETCHING` once the job
        succeeded and the fetch workflow ``fetch_workflow_id(<this id>)`` is enqueued;
        :data:`REQUEUED` when the submit provably created nothing and the shot's next attempt,
        ``retry_workflow_id(<first id>, attempt + 1)``, is enqueued on the account's queue
        (after a durable wait of the backoff, during which this workflow keeps its slot).
    """
    t = ShotTask.of(task)
    outcome = await shotsteps.submit(task, attempt)
    if outcome["state"] == shotsteps.RETRY:
        await DBOS.sleep_async(float(outcome["after"]))
        queue = await _queue(t.queue)
        with SetWorkflowID(retry_workflow_id(t.workflow_id, attempt + 1)):
            await queue.enqueue_async(shot_workflow, task, attempt + 1)
        return REQUEUED
    if outcome["state"] != ShotState.POLLING:
        return str(outcome["state"])
    job, since = outcome["job"], float(outcome["since"])
    last_s: float | None = None
    last_raw = ""
    while True:
        result = await shotsteps.poll(task, job, last_raw, since, last_s)
        last_raw, status = str(result["raw"]), result["status"]
        if status == JobStatus.SUCCEEDED:
            await _enqueue_fetch(retry_workflow_id(t.workflow_id, attempt), t, job, result)
            return FETCHING
        if status in (JobStatus.FAILED, JobStatus.CANCELLED):
            return str(result.get("final") or ShotState.FAILED)
        if result["timed_out"]:
            return await shotsteps.timed_out(task, t.settings.poll_deadline_s)
        last_s = float(result["next_s"])
        await DBOS.sleep_async(last_s)


#: Queues already read from the store by this process (a read is a query), by name.
_QUEUES: dict[str, Queue] = {}


async def _queue(name: str) -> Queue:
    """The registered queue ``name`` (read once per process)."""
    queue = _QUEUES.get(name) or await DBOS.retrieve_queue_async(name)
    if queue is None:  # registered by `pipeline run` before the run workflow starts
        raise RuntimeError(f"no queue {name}")
    _QUEUES[name] = queue
    return queue


async def _enqueue_fetch(
    shot_id: str, t: ShotTask, job: dict[str, Any], result: dict[str, Any]
) -> None:
    queue = await _queue(FETCH_QUEUE)
    with SetWorkflowID(fetch_workflow_id(shot_id)):
        await queue.enqueue_async(fetch_workflow, t.to_json(), job, result)


@DBOS.workflow(name=FETCH_WORKFLOW)
async def fetch_workflow(task: dict[str, Any], job: dict[str, Any], result: dict[str, Any]) -> str:
    """Download, verify and store the video of a succeeded job (:func:`.shotsteps.fetch`).

    Returns:
        ``"done"`` or ``"failed"``.
    """
    return await shotsteps.fetch(task, job, result)


@DBOS.workflow(name="pipeline.run")
async def run_workflow(run_id: str, tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Enqueue each shot of the run on its account's queue, wait for all, record the end.

    Enqueuing is idempotent: a shot workflow's id is its run, shot and fingerprint, so a shot
    already enqueued (by this run or an earlier start of it) is joined, not started again.

    Returns:
        Shots per final state (``{"done": n, "failed": m, ...}``).
    """
    ids = []
    for task in tasks:
        t = ShotTask.of(task)
        queue = await _queue(t.queue)
        with SetWorkflowID(t.workflow_id):
            await queue.enqueue_async(shot_workflow, task)
        ids.append(t.workflow_id)
    finals = await wait_shots(run_id, ids)
    await shotsteps.finish_run(run_id, finals)
    return finals


#: How often a run workflow looks whether its shots have all ended (s).
WAIT_S = 1.0
#: Workflows read per query when a run's results are gathered.
_BATCH = 500


@DBOS.step(name="pipeline.wait_shots")
async def wait_shots(run_id: str, ids: list[str]) -> dict[str, int]:
    """Wait until no shot or fetch workflow of the run is unfinished; count their final states.

    One query every :data:`WAIT_S` (is any of the run's shot or fetch workflows still queued or
    running?) rather than a durable wait per shot, which cost a step, i.e. two transactions, for
    each of thousands of shots. A step re-run after its worker died simply looks again.

    Args:
        run_id: the run (its workflows' ids start with ``<run_id>/``).
        ids: the shot workflows enqueued by this run.

    Returns:
        Shots per final state; a workflow that ended in an error counts as ``"error"``.
    """
    while True:
        unfinished = await DBOS.list_workflows_async(
            workflow_id_prefix=f"{run_id}/",
            name=[SHOT_WORKFLOW, FETCH_WORKFLOW],
            status=["PENDING", "ENQUEUED"],
            load_input=False,
            load_output=False,
            limit=1,
        )
        if not unfinished:
            break
        await asyncio.sleep(WAIT_S)
    # Each shot's chain: its workflow, its retries (REQUEUED), then its fetch (FETCHING).
    last = {wid: wid for wid in ids}
    attempt = dict.fromkeys(ids, 0)
    finals: dict[str, int] = {}
    while last:
        outputs = await _outputs(list(last.values()))
        following: dict[str, str] = {}
        for first, wid in last.items():
            state = outputs.get(wid, "error")
            if state == REQUEUED:
                attempt[first] += 1
                following[first] = retry_workflow_id(first, attempt[first])
            elif state == FETCHING:
                following[first] = fetch_workflow_id(wid)
            else:
                finals[state] = finals.get(state, 0) + 1
        last = following
    return finals


async def _outputs(ids: list[str]) -> dict[str, str]:
    """``{workflow id: its result}`` of the workflows ``ids`` that ended successfully."""
    out: dict[str, str] = {}
    for at in range(0, len(ids), _BATCH):
        rows = await DBOS.list_workflows_async(workflow_ids=ids[at : at + _BATCH], load_input=False)
        out |= {r.workflow_id: str(r.output) for r in rows if r.status == "SUCCESS"}
    return out


def summary(finals: Mapping[str, int]) -> str:
    """``"12 done, 1 needs_reconcile"`` for a run workflow's result."""
    return ", ".join(f"{n} {state}" for state, n in sorted(finals.items())) or "no shots"
