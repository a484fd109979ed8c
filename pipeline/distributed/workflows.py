"""The DBOS workflows of the distributed mode: a run, and each shot's submit -> poll -> fetch.

A **shot workflow** (:func:`shot_workflow`, id ``run/shot/fingerprint``, on its account's
queue) is a chain of DBOS steps; a step's result is recorded in PostgreSQL when it returns, so a
workflow recovered on another worker skips every completed step and re-runs only the one that
was interrupted:

- ``submit`` (:func:`.shotsteps.submit`): the money rules of :mod:`.intent`: intent committed,
  then the paid call, then its outcome; re-run, it finds the intent and never pays again;
- ``poll``, then a durable sleep (``DBOS.sleep_async``: a recovered workflow sleeps only what is
  left), until the job ends or its poll deadline passes;
- ``fetch``: the video downloaded and verified in a private directory, put in the manifest's
  object storage, ``fetched`` recorded with its object URL and sha256.

Every transition is also an event of the run's journal (the same events as the JSONL
checkpoint), so ``pipeline status --store`` follows the run live.

A **run workflow** (:func:`run_workflow`) enqueues the shot workflows of a run and waits for them
all, then records ``run_finished``. Its media were prepared by ``pipeline run`` on the machine
that has the files (:mod:`.submitrun`): the tasks it enqueues carry URLs only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbos import DBOS, SetWorkflowID

from pipeline.distributed import shotsteps
from pipeline.distributed.queues import queue_name
from pipeline.distributed.tasks import ShotTask
from pipeline.models import JobStatus, ShotState

#: Poll interval growth per poll, between the provider's ``poll_min_s`` and ``poll_max_s``.
POLL_GROWTH = 1.5


@DBOS.workflow(name="pipeline.shot")
async def shot_workflow(task: dict[str, Any]) -> str:
    """Submit, poll and fetch one shot; returns its final state (a :class:`ShotState` value).

    ``task`` is a :meth:`ShotTask.to_json`.
    """
    t = ShotTask.of(task)
    outcome = await shotsteps.submit(task)
    if outcome["state"] != ShotState.POLLING:
        return str(outcome["state"])
    job = outcome["job"]
    settings = t.settings
    delay, waited, last_raw = settings.poll_min_s, 0.0, ""
    while True:
        await DBOS.sleep_async(delay)
        waited += delay
        result = await shotsteps.poll(task, job, last_raw)
        last_raw = str(result.get("raw_status") or result["status"])
        status = result["status"]
        if status == JobStatus.SUCCEEDED:
            return await shotsteps.fetch(task, job, result)
        if status in (JobStatus.FAILED, JobStatus.CANCELLED):
            return str(result.get("final") or ShotState.FAILED)
        if waited >= settings.poll_deadline_s:
            return await shotsteps.timed_out(task, waited)
        delay = min(settings.poll_max_s, max(settings.poll_min_s, delay * POLL_GROWTH))


@DBOS.workflow(name="pipeline.run")
async def run_workflow(run_id: str, tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Enqueue each shot of the run on its account's queue, wait for all, record the end.

    Enqueuing is idempotent: a shot workflow's id is its run, shot and fingerprint, so a shot
    already enqueued (by this run or an earlier start of it) is joined, not started again.

    Returns:
        Shots per final state (``{"done": n, "failed": m, ...}``).
    """
    handles = []
    for task in tasks:
        t = ShotTask.of(task)
        queue = await DBOS.retrieve_queue_async(
            queue_name(t.shot.provider, t.settings.account or "default")
        )
        if queue is None:  # registered by `pipeline run` before the run workflow starts
            raise RuntimeError(f"no queue for {t.shot.provider} (account {t.settings.account})")
        with SetWorkflowID(t.workflow_id):
            handles.append(await queue.enqueue_async(shot_workflow, task))
    finals: dict[str, int] = {}
    for handle in handles:
        state = await handle.get_result()
        finals[state] = finals.get(state, 0) + 1
    await shotsteps.finish_run(run_id, finals)
    return finals


def summary(finals: Mapping[str, int]) -> str:
    """``"12 done, 1 needs_reconcile"`` for a run workflow's result."""
    return ", ".join(f"{n} {state}" for state, n in sorted(finals.items())) or "no shots"
