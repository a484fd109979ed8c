"""``pipeline run MANIFEST --store URL``: start or join a run in the store, enqueue its shots.

On the machine that has the manifest's files:

1. the run is created in the store, or joined (its id is the manifest's ``name``, as the run
   directory is in the embedded mode); ``shot_planned`` is journaled for shots new to it;
2. each shot's media are prepared as for an embedded run (object storage, presigned URLs, data
   URLs): workers share no disk, so the tasks they get carry URLs only; a re-roll the store's
   run records (a review's, sent by ``pipeline pull``) is one more take of its shot;
3. each provider account's queue is registered with the manifest's limits;
4. the run workflow is started; it enqueues every shot workflow (idempotent: a shot already
   enqueued by an earlier start is joined, an edited one is new) and waits for them.

Then, unless ``work`` is False, this process works as a worker until the run is finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import anyio

from pipeline.distributed.queues import RUN_QUEUE, QueueSpec, register_run_queue
from pipeline.distributed.tasks import ShotTask, shot_workflow_id
from pipeline.engine.options import provider_settings
from pipeline.errors import UsageError
from pipeline.journal.pgjournal import PgJournal
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.manifest.takes import with_rerolls
from pipeline.models import Event, MediaRef, Shot
from pipeline.providers import PROVIDERS
from pipeline.settings import ProviderSettings
from pipeline.transfer.storage import ObjectStorage
from pipeline.transfer.upload import MediaResolver


@dataclass(frozen=True, slots=True)
class Started:
    """What :func:`start_run` did.

    Attributes:
        run_id: the run's id (the manifest's ``name``).
        created: True for a new run, False when an existing one was joined.
        shots: shots in the run workflow (every shot of the manifest).
        new: shots journaled as planned now (new or edited).
        queues: the account queues the shots go to.
        workflow_id: the run workflow's DBOS id.
        warnings: account queues whose limits this manifest changed (for every run on them).
    """

    run_id: str
    created: bool
    shots: int
    new: int
    queues: tuple[str, ...]
    workflow_id: str
    warnings: tuple[str, ...] = ()


def check(manifest: Manifest) -> None:
    """Refuse what the distributed mode cannot run.

    Raises:
        UsageError: no object storage (workers share no disk: videos go to storage), or a
            shot of the offline ``local`` renderer (its jobs live on one machine's disk).
    """
    if manifest.storage is None:
        raise UsageError(
            f"{manifest.path}: storage: the distributed mode (--store) needs object storage: "
            "workers share no disk, so each video goes to the manifest's `storage` "
            "(s3://..., gs://..., az://...) and `pipeline pull` fetches it from there"
        )
    local = sorted({s.id for s in manifest.shots if s.provider == "local"})
    if local:
        raise UsageError(
            f"{manifest.path}: provider `local` renders on one machine's disk and cannot run "
            f"with --store (shots: {', '.join(local[:5])}{' ...' if len(local) > 5 else ''})"
        )


def _settings(manifest: Manifest) -> dict[str, ProviderSettings]:
    return {
        name: provider_settings(manifest, name) for name in {s.provider for s in manifest.shots}
    }


async def _prepare(manifest: Manifest, settings: Mapping[str, ProviderSettings]) -> list[ShotTask]:
    assert manifest.storage is not None
    storage = ObjectStorage(manifest.storage, file=str(manifest.path))
    longest = max((s.poll_deadline_s for s in settings.values()), default=0.0)
    resolver = MediaResolver(storage=storage, min_validity_s=longest + 600.0)
    tasks = []
    for shot in manifest.shots:
        mode = PROVIDERS[shot.provider].media.mode_for(shot)
        media: list[MediaRef] = [await resolver.resolve(a, mode) for a in shot.assets]
        tasks.append(
            ShotTask(
                run_id=manifest.name,
                shot=shot,
                media=tuple(media),
                settings=settings[shot.provider],
                downloads=manifest.downloads,
                storage=manifest.storage,
            )
        )
    return tasks


def _plan_events(journal: PgJournal, run_id: str, shots: tuple[Shot, ...], state: RunState) -> int:
    """Journal ``shot_planned`` for each shot the run does not know with this fingerprint."""
    todo = [
        (Event.SHOT_PLANNED, s.id, {"fp": s.fingerprint, "prov": s.provider, "model": s.model})
        for s in shots
        if s.id not in state.shots or state.shots[s.id].fingerprint != s.fingerprint
    ]
    if todo:
        journal.append_many(run_id, todo)
    return len(todo)


def start_run(manifest: Manifest, dsn: str, *, max_usd: float | None = None) -> Started:
    """Steps 1-4 of the module docstring (DBOS must be launched in this process).

    Args:
        manifest: the loaded, validated manifest (endpoints already checked by the CLI).
        dsn: the store.
        max_usd: spend limit overriding ``budget.max_usd`` (shared by every worker of the run).

    Raises:
        UsageError: see :func:`check`.
        StoreError: the store failed.
        NotSent / Rejected: a media file could not be uploaded.
    """
    from dbos import DBOS, SetWorkflowID

    from pipeline.distributed.workflows import run_workflow

    check(manifest)
    run_id = manifest.name
    budget = max_usd if max_usd is not None else manifest.budget.max_usd
    journal = PgJournal(dsn)
    try:
        created = journal.create_run(
            run_id,
            manifest_name=manifest.name,
            manifest_text=manifest.path.read_text(encoding="utf-8"),
            budget_usd=budget,
        )
        if created:
            journal.append(run_id, Event.RUN_STARTED, None, {"run": run_id, "store": True})
        # re-rolls recorded in the store's run (a review, sent by `pipeline pull`) are takes
        state = journal.state(run_id)
        manifest = with_rerolls(manifest, state)
        new = _plan_events(journal, run_id, manifest.shots, state)
    finally:
        journal.close()
    settings = _settings(manifest)
    specs = {q.name: q for q in (QueueSpec.of(name, s) for name, s in settings.items())}
    warnings = tuple(w for w in (spec.register() for spec in specs.values()) if w is not None)
    tasks = anyio.run(_prepare, manifest, settings)
    ids = "\n".join(shot_workflow_id(run_id, t.shot.id, t.shot.fingerprint) for t in tasks)
    digest = hashlib.sha256(ids.encode()).hexdigest()[:16]
    workflow_id = f"{run_id}/run/{digest}"
    register_run_queue()
    runs = DBOS.retrieve_queue(RUN_QUEUE)
    assert runs is not None
    with SetWorkflowID(workflow_id):  # any worker runs it: `--no-work` may leave at once
        runs.enqueue(run_workflow, run_id, [t.to_json() for t in tasks])
    queues = tuple(sorted(specs))
    return Started(run_id, created, len(tasks), new, queues, workflow_id, warnings)


def wait_run(workflow_id: str) -> dict[str, int]:
    """Block until the run workflow ``workflow_id`` ends; returns its shots per final state."""
    from dbos import DBOS

    result: dict[str, int] = DBOS.retrieve_workflow(workflow_id).get_result()
    return result
