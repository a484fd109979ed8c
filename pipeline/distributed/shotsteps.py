"""The DBOS steps of a shot workflow (:mod:`.workflows`): submit, poll, fetch, and the endings.

Each step takes the task as JSON (:class:`~.tasks.ShotTask`) and returns JSON; each writes its
journal events itself. Only free calls are retried inside a step (poll, fetch, the quote);
the paid call follows the money rules of :mod:`.intent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, cast

import anyio
from dbos import DBOS

from pipeline.distributed.runtime import Runtime, current
from pipeline.distributed.tasks import ShotTask, job_json, job_of, poll_json, poll_of
from pipeline.engine import pollsched, pricing
from pipeline.errors import (
    Ambiguous,
    FetchError,
    JobFailed,
    NotSent,
    ProviderError,
    RateLimited,
    Rejected,
)
from pipeline.models import (
    Artifact,
    Charged,
    Event,
    JobHandle,
    JobStatus,
    MediaRef,
    PollResult,
    ShotState,
)
from pipeline.providers import PROVIDERS
from pipeline.providers.base import Provider, SupportsQuote, SupportsReconcile
from pipeline.transfer import download, playable
from pipeline.transfer.storage import StorageError, object_name

log = logging.getLogger("pipeline")
Json = dict[str, Any]

#: Attempts of a free call (poll, fetch, quote) before the step gives up.
FREE_ATTEMPTS = 5
#: Attempts of a submit that provably created nothing (NotSent, 429), same key each time.
SUBMIT_ATTEMPTS = 5
#: Longest one poll step polls before it hands back to its workflow's durable sleep (s).
POLL_STEP_S = 60.0


def _provider(rt: Runtime, t: ShotTask) -> Provider:
    return rt.provider(t.shot.provider, t.settings, t.downloads, t.simulate)


async def _append(rt: Runtime, t: ShotTask, ev: Event, **fields: Any) -> None:
    await anyio.to_thread.run_sync(
        lambda: rt.journal.append(t.run_id, ev, t.shot.id, fields), abandon_on_cancel=False
    )


def backoff_s(attempt: int, exc: Exception | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    0.2 s doubling up to 10 s; a 429's Retry-After (up to 60 s) as a floor.
    """
    wait: float = min(10.0, 0.2 * 2.0**attempt)
    if isinstance(exc, RateLimited) and exc.retry_after:
        wait = max(wait, min(exc.retry_after, 60.0))
    return wait


async def _backoff(attempt: int, exc: Exception | None = None) -> None:
    await asyncio.sleep(backoff_s(attempt, exc))


async def _free_call(fn: Any) -> Any:
    """``await fn()``, retried on transient failures (NotSent, Ambiguous, 429) with backoff."""
    for attempt in range(FREE_ATTEMPTS):
        try:
            return await fn()
        except (NotSent, Ambiguous, RateLimited) as exc:
            if attempt == FREE_ATTEMPTS - 1:
                raise
            await _backoff(attempt, exc)
    raise AssertionError("unreachable")


async def _estimate(provider: Provider, t: ShotTask) -> float | None:
    quote = None
    if isinstance(provider, SupportsQuote):
        quoting = cast(SupportsQuote, provider)

        async def quote_once() -> float:
            usd: float = await _free_call(lambda: quoting.quote(t.shot))
            return usd

        quote = quote_once
    spec = PROVIDERS[t.shot.provider]
    return (await pricing.estimate(t.shot, spec, t.settings, quote)).usd


async def _fresh_media(rt: Runtime, t: ShotTask) -> list[MediaRef]:
    """The shot's media, presigned again where a URL would expire before the poll deadline.

    The shot may have waited in the queue since ``pipeline run`` signed its URLs.
    """
    out: list[MediaRef] = []
    for ref in t.media:
        stale = ref.expires_at is not None and ref.expires_at - time.time() < (
            t.settings.poll_deadline_s + 600
        )
        if stale and t.storage is not None and ref.sha256:
            store = rt.storage(t.storage)
            signed = await store.sign(object_name(ref.sha256, ref.mime))
            ref = MediaRef(ref.role, signed.url, ref.sha256, ref.mime, signed.expires_at)
        out.append(ref)
    return out


def _submitted_fields(job: JobHandle, est_usd: float | None, **extra: Any) -> Json:
    # The job's one-time data (bearer capabilities) stays in pipeline.submits, not the journal.
    cost = job.cost_usd if job.cost_usd is not None else est_usd
    return {
        "job": job.job_id,
        "model": job.model,
        "prov": job.provider,
        "cost_usd": cost,
        "credits": job.credits,
        **extra,
    }


#: What :func:`submit` returns for a submit that provably created nothing and may be retried.
RETRY = "retry"


@DBOS.step(name="pipeline.submit")
async def submit(task: Json, attempt: int = 0) -> Json:
    """Intent, paid call, outcome (see :mod:`.intent`); or, re-run, the recorded outcome.

    One paid call at most. A call that provably created nothing (NotSent, 429) is not retried
    here: the step returns :data:`RETRY` and the workflow goes back to the account's queue, so
    that every submit request, a retry too, passes the queue's limiter and concurrency.

    Args:
        task: the :meth:`ShotTask.to_json`.
        attempt: 0 for the shot's first submit, then 1, 2... for retries after NotSent/429
            (the same client reference each time).

    Returns:
        ``{"state": "polling", "job": {...}, "since": epoch s}``, ``{"state": "retry",
        "after": s}`` or ``{"state": <final state>}`` (``pending`` after
        :data:`SUBMIT_ATTEMPTS` unsent attempts).
    """
    rt, t = current(), ShotTask.of(task)
    shot, provider = t.shot, _provider(rt, t)
    key = f"{t.run_id}:{shot.id}:1"
    est = await _estimate(provider, t)
    fields = {"att": attempt + 1, "key": key, "fp": shot.fingerprint, "prov": shot.provider}
    fields |= {"model": shot.model, "est_usd": est}
    if rt.stopping:  # never start a paid call in a stopping process (see Runtime)
        await asyncio.Event().wait()  # until the process ends; another worker recovers it
    intent = await anyio.to_thread.run_sync(
        lambda: rt.submits.open_intent(
            t.run_id, shot.id, shot.fingerprint, key=key, est_usd=est, fields=fields
        )
    )
    if intent.held is not None:
        return {"state": ShotState.PENDING.value, "held": intent.held}
    if not intent.fresh:
        return await _earlier(rt, t, provider, intent.outcome, intent.job, est)
    outcome = await _paid_call(rt, t, provider, key)
    if isinstance(outcome, JobHandle):
        return await _close(rt, t, "submitted", outcome, est)
    if isinstance(outcome, NotSent | RateLimited):
        await _close_failed(rt, t, "not_sent", Event.SUBMIT_NOT_SENT, str(outcome))
        if attempt + 1 >= SUBMIT_ATTEMPTS:
            return {"state": ShotState.PENDING.value}
        return {"state": RETRY, "after": backoff_s(attempt, outcome)}
    if isinstance(outcome, Rejected):
        reason = str(outcome)
        fields_r = {"reason": reason, "status": outcome.status}
        await _close_failed(rt, t, "rejected", Event.SUBMIT_REJECTED, reason, fields_r)
        return {"state": ShotState.FAILED.value}
    await _close_failed(rt, t, "ambiguous", Event.SUBMIT_AMBIGUOUS, str(outcome))
    return {"state": ShotState.NEEDS_RECONCILE.value}


async def _paid_call(
    rt: Runtime, t: ShotTask, provider: Provider, key: str
) -> JobHandle | ProviderError:
    rt.submits_in_air += 1
    try:
        media = await _fresh_media(rt, t)
        return await provider.submit(t.shot, media, key=key)
    except ProviderError as exc:
        return exc
    except StorageError as exc:
        return NotSent(f"could not presign the media again: {exc}")
    finally:
        rt.submits_in_air -= 1


async def _close(
    rt: Runtime, t: ShotTask, outcome: str, job: JobHandle, est: float | None, **extra: Any
) -> Json:
    doc = job_json(job)
    fields = _submitted_fields(job, est, **extra)
    await _close_intent(rt, t, outcome, Event.SUBMITTED, fields, job=doc)
    return {"state": ShotState.POLLING.value, "job": doc, "since": time.time()}


async def _close_failed(
    rt: Runtime,
    t: ShotTask,
    outcome: str,
    event: Event,
    reason: str,
    fields: Json | None = None,
) -> None:
    await _close_intent(rt, t, outcome, event, fields or {"reason": reason})


async def _close_intent(
    rt: Runtime, t: ShotTask, outcome: str, event: Event, fields: Json, job: Json | None = None
) -> None:
    """Record the outcome of ``t``'s submit intent and its ``event`` (a worker thread)."""
    await anyio.to_thread.run_sync(
        lambda: rt.submits.close_intent(
            t.run_id,
            t.shot.id,
            t.shot.fingerprint,
            outcome=outcome,
            event=event,
            fields=fields,
            job=job,
        )
    )


async def _earlier(
    rt: Runtime,
    t: ShotTask,
    provider: Provider,
    outcome: str | None,
    job: Any,
    est: float | None,
) -> Json:
    """An intent written by an earlier execution of this step: take its outcome.

    Without one, the worker stopped while the submit was in the air: reconcile with the
    provider where the adapter can, else ``needs_reconcile``; never submit again.
    """
    if outcome == "submitted" and job is not None:
        return {"state": ShotState.POLLING.value, "job": dict(job), "since": time.time()}
    if outcome == "rejected":
        return {"state": ShotState.FAILED.value}
    if outcome == "ambiguous":
        return {"state": ShotState.NEEDS_RECONCILE.value}
    reason = "submit outcome unknown: its worker stopped while the submit was in the air"
    if isinstance(provider, SupportsReconcile):
        key = f"{t.run_id}:{t.shot.id}:1"
        try:
            since = await anyio.to_thread.run_sync(lambda: _intent_time(rt, t)) - 60.0
            found = await cast(SupportsReconcile, provider).reconcile(t.shot, key=key, since=since)
        except ProviderError as exc:
            reason = f"{reason}; reconcile failed: {exc}"
        else:
            if found is not None:
                return await _close(rt, t, "submitted", found, est, reconciled=True)
            reason = f"{reason}; the provider has no job for it (reconciled): run again to submit"
            await _close_failed(rt, t, "not_sent", Event.SUBMIT_NOT_SENT, reason)
            return {"state": ShotState.PENDING.value}
    await _close_failed(rt, t, "ambiguous", Event.SUBMIT_AMBIGUOUS, reason)
    return {"state": ShotState.NEEDS_RECONCILE.value}


def _intent_time(rt: Runtime, t: ShotTask) -> float:
    rows = rt.journal.query(
        "SELECT extract(epoch FROM intent_at) FROM pipeline.submits "
        "WHERE run_id = %s AND shot = %s AND fp = %s",
        (t.run_id, t.shot.id, t.shot.fingerprint),
    )
    return float(rows[0][0]) if rows else 0.0


@DBOS.step(name="pipeline.poll")
async def poll(
    task: Json, job: Json, last_raw: str, since: float, last_s: float | None = None
) -> Json:
    """Poll the job until it ends, its deadline passes or :data:`POLL_STEP_S` have gone by.

    The waits between polls are the embedded runner's learned schedule
    (:mod:`pipeline.engine.pollsched`): the first poll where the fastest jobs seen so far
    finished, then waits that shrink near the completion times seen, within ``poll_min_s`` and
    ``poll_max_s``. Each worker process learns from the jobs it polls (per provider and model).

    One step holds many polls, with in-memory waits between them: DBOS records a step's start
    and result in PostgreSQL (about five transactions with the durable sleep between steps), so
    one step per poll made that bookkeeping most of a worker's CPU. A worker that dies inside
    the step loses nothing: polls are free, and the recovered step simply polls again.

    Args:
        task: the :meth:`ShotTask.to_json`.
        job: the submitted job (:func:`~.tasks.job_json`).
        last_raw: the provider's last status seen (journaled only when it changes).
        since: epoch seconds of the submit (the poll deadline counts from it).
        last_s: the wait before this step (the workflow's durable sleep), or None for the
            job's first step (which waits for the first poll itself).

    Returns:
        The last :class:`PollResult` as JSON, plus ``raw`` (the provider's last status),
        ``next_s`` (the wait before the next poll), ``timed_out`` (bool) and, for a job that
        failed, ``final``.
    """
    rt, t = current(), ShotTask.of(task)
    provider, handle, policy = _provider(rt, t), job_of(job), t.settings.polling
    times = rt.history.times(handle.provider, handle.model)
    deadline = since + policy.deadline_s
    started, running_at = time.monotonic(), None
    if last_s is None:
        delay = interval = pollsched.first_delay(time.time() - since, times, policy)
    else:
        delay, interval = 0.0, last_s
    while True:
        await asyncio.sleep(max(0.0, min(delay, deadline - time.time())))
        result = await _poll_once(rt, t, provider, handle, last_raw)
        last_raw, elapsed = result["raw"], time.time() - since
        result["timed_out"] = elapsed >= policy.deadline_s
        if result["status"] == JobStatus.SUCCEEDED.value and running_at is not None:
            times.add((running_at + elapsed) / 2)  # seen running, then done: in between
        if result["status"] not in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            return result
        running_at = elapsed
        interval = pollsched.next_delay(
            elapsed, interval, times, policy, policy.min_s, result.get("eta_s")
        )
        delay = result["next_s"] = interval
        if result["timed_out"] or time.monotonic() - started + delay > POLL_STEP_S:
            return result


async def _poll_once(
    rt: Runtime, t: ShotTask, provider: Provider, handle: JobHandle, last_raw: str
) -> Json:
    """Ask once (retrying transient failures) for the job's status; journal what changed.

    Every request waits for this process's share of the account's ``polls_per_minute``.
    """

    async def ask() -> PollResult:
        gate = await rt.poll_gate(t.queue, t.settings.polls_per_minute)
        if gate is not None:
            await gate.acquire()
        return await provider.poll(handle)

    try:
        result = await _free_call(ask)
    except JobFailed as exc:
        charged = Charged.NO if exc.refunded else Charged.UNKNOWN
        await _append(rt, t, Event.FAILED, reason=f"job failed: {exc}", charged=charged.value)
        return {"status": JobStatus.FAILED.value, "final": ShotState.FAILED.value, "raw": ""}
    raw = result.raw_status or result.status.value
    if raw != last_raw:
        await _append(rt, t, Event.STATUS, status=result.status.value, raw=raw)
    if result.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        refunded = result.refunded
        charged = Charged.NO if refunded else (Charged.UNKNOWN if refunded is None else Charged.YES)
        ev = Event.CANCELLED if result.status == JobStatus.CANCELLED else Event.FAILED
        final = ShotState.CANCELLED if ev == Event.CANCELLED else ShotState.FAILED
        reason = f"job {result.status.value}: {result.message or raw}"
        await _append(rt, t, ev, reason=reason, charged=charged.value)
        return {**poll_json(result), "final": final.value, "raw": raw}
    if result.status == JobStatus.SUCCEEDED:
        await _append(rt, t, Event.COMPLETED)
    return {**poll_json(result), "raw": raw}


@DBOS.step(name="pipeline.fetch")
async def fetch(task: Json, job: Json, result: Json) -> str:
    """Download and verify the video, put it in the object storage, journal ``fetched``.

    Returns:
        ``"done"``, or ``"failed"`` when the video is refused or cannot be stored.
    """
    rt, t = current(), ShotTask.of(task)
    if t.storage is None:
        reason = "the manifest has no `storage`: a worker's video cannot reach the run"
        await _append(rt, t, Event.FAILED, reason=reason, charged=Charged.YES.value)
        return ShotState.FAILED.value
    provider, handle, polled = _provider(rt, t), job_of(job), poll_of(result)
    folder = rt.workdir / uuid.uuid4().hex
    final = folder / "shots" / f"{t.shot.id}.mp4"
    await anyio.Path(final.parent).mkdir(parents=True)
    try:
        art = await _download(provider, t, handle, polled, final)
        store = rt.storage(t.storage)
        name = f"runs/{t.run_id}/shots/{t.shot.id}-{art.sha256[:16]}.mp4"
        await store.ensure(art.path, name)
    except (ProviderError, StorageError) as exc:
        reason = f"download_rejected: {exc}" if isinstance(exc, FetchError) else str(exc)
        await _append(rt, t, Event.FAILED, reason=reason, charged=Charged.YES.value)
        return ShotState.FAILED.value
    finally:
        await anyio.to_thread.run_sync(lambda: _rmtree(folder))
    url = f"{store.url.rstrip('/')}/{name}"
    path = f"shots/{t.shot.id}.mp4"
    await _append(rt, t, Event.FETCHED, path=path, bytes=art.size, sha256=art.sha256, url=url)
    return ShotState.DONE.value


def _rmtree(folder: Any) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


async def _download(
    provider: Provider, t: ShotTask, job: JobHandle, polled: Any, final: Any
) -> Artifact:
    async def record(art: Artifact, publish: Any) -> None:
        await anyio.to_thread.run_sync(publish)

    for attempt in range(FREE_ATTEMPTS):
        try:
            async with provider.fetch(job, polled) as stream:
                return await download.write_verified(
                    stream,
                    final,
                    max_bytes=t.downloads.max_bytes,
                    record=record,
                    expect=playable.Expected(t.shot.duration, t.shot.provider),
                )
        except FetchError as exc:
            if exc.rejected or attempt == FREE_ATTEMPTS - 1:
                raise
            if exc.expired:
                polled = await _free_call(lambda: provider.poll(job))
            await _backoff(attempt, exc)
    raise AssertionError("unreachable")


@DBOS.step(name="pipeline.timed_out")
async def timed_out(task: Json, waited_s: float) -> str:
    """The job outlived its poll deadline: journal ``failed`` (charged: unknown)."""
    rt, t = current(), ShotTask.of(task)
    reason = f"timed out: the job was unfinished after {waited_s:.0f} s of polling"
    await _append(rt, t, Event.FAILED, reason=reason, charged=Charged.UNKNOWN.value)
    return ShotState.FAILED.value


@DBOS.step(name="pipeline.finish_run")
async def finish_run(run_id: str, finals: dict[str, int]) -> None:
    """Journal ``run_finished`` with the shots per final state."""
    rt = current()
    await anyio.to_thread.run_sync(
        lambda: rt.journal.append(run_id, Event.RUN_FINISHED, None, {"finals": finals})
    )
