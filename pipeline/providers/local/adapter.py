"""``local``: an offline provider whose jobs render real H.264 previs clips (model ``previz``).

It behaves like a small video service living inside the run directory, so that every stage,
interruption and resume path can be exercised with no account and no network::

    RUN_DIR/local-provider/ledger.jsonl      one line per accepted submit (fsynced: the "charge")
    RUN_DIR/local-provider/jobs/<id>.json    the job's request (so a restarted service can resume)
    RUN_DIR/local-provider/jobs/<id>.mp4     the rendered clip (written atomically)
    RUN_DIR/local-provider/jobs/<id>.error   why the render failed
    RUN_DIR/local-provider/jobs/<id>.cancelled

A job waits ``latency_s`` (simulated queue time), then renders in a worker thread (at most one per
core) with :mod:`pipeline.render.clips`. Jobs left unfinished by a killed process are picked up
again
when they are polled, as a real service's queue would survive its client. The ledger lets the
service list its jobs, so an intent with no recorded outcome can be reconciled
(:class:`~pipeline.providers.base.SupportsReconcile`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc

from pipeline.errors import FetchError, JobFailed, Rejected
from pipeline.models import (
    Download,
    JobHandle,
    JobStatus,
    MediaRef,
    MediaRole,
    ModelCaps,
    PollResult,
    Shot,
)
from pipeline.providers.base import MediaPolicy, ProviderContext, ProviderSpec
from pipeline.settings import ProviderSettings

if TYPE_CHECKING:
    from pipeline.render.clips import ClipSpec

NAME = "local"
FPS = 12
CHUNK = 1 << 16

PREVIZ = ModelCaps(
    durations=tuple(range(1, 31)),
    aspect_ratios=("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21", "4:5", "5:4", "3:2", "2:3"),
    resolutions=("240p", "360p", "480p", "540p", "720p", "1080p"),
    max_prompt_chars=4000,
    first_frame=True,
    end_frame=True,
    max_reference_images=4,
)


class LocalProvider:
    """The ``local`` adapter and its in-process job service (see the module docstring).

    Args:
        ctx: run directory and settings (``latency_s``: queue seconds added to every job).
    """

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        self.root = ctx.run_dir / "local-provider"
        self.jobs_dir = self.root / "jobs"
        self.latency_s = ctx.settings.latency_s
        self._workers = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        self._active: dict[str, float] = {}  # job id -> time its processing started
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> LocalProvider:
        await anyio.to_thread.run_sync(self._prepare_dirs)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the job service: unfinished renders are resumed by the next run. Idempotent."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def _prepare_dirs(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.jobs_dir.glob(".render-*"):  # left by a killed render
            stale.unlink(missing_ok=True)

    # ----- submit -----------------------------------------------------------------------------

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """Accept the job: store its request, append the (fsynced) ledger line, start it.

        Raises:
            Rejected: the shot is not renderable (checked again here, as a service would).
        """
        if shot.model not in SPEC.models:
            raise Rejected(f"unknown model {shot.model!r}", provider=NAME, shot=shot.id, status=400)
        job_id = f"loc-{uuid.uuid4().hex[:16]}"
        request = _request(shot, media)
        now = time.time()
        entry = {"job": job_id, "key": key, "shot": shot.id, "ts": now}
        await anyio.to_thread.run_sync(self._accept, job_id, request, entry)
        self._start(job_id, request)
        return JobHandle(provider=NAME, job_id=job_id, model=shot.model, submitted_at=now)

    def _accept(self, job_id: str, request: dict[str, Any], entry: dict[str, Any]) -> None:
        tmp = self.jobs_dir / f".{job_id}.json.tmp"
        tmp.write_text(json.dumps(request))
        os.replace(tmp, self.jobs_dir / f"{job_id}.json")
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        fd = os.open(self.root / "ledger.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _start(self, job_id: str, request: dict[str, Any]) -> None:
        if self._tg is None:
            raise RuntimeError("LocalProvider used outside `async with`")
        self._active[job_id] = time.time()
        self._tg.start_soon(self._process, job_id, request)

    async def _process(self, job_id: str, request: dict[str, Any]) -> None:
        from pipeline.render.clips import render_clip  # PyAV and Pillow: loaded on first use

        with anyio.CancelScope() as scope:
            self._scopes[job_id] = scope
            try:
                await anyio.sleep(self.latency_s)
                async with self._workers:
                    dest = self.jobs_dir / f"{job_id}.mp4"
                    await anyio.to_thread.run_sync(render_clip, _clip_spec(request), dest)
            except (OSError, ValueError) as exc:
                (self.jobs_dir / f"{job_id}.error").write_text(f"render failed: {exc}")
            finally:
                self._scopes.pop(job_id, None)
                self._active.pop(job_id, None)

    # ----- poll / fetch ---------------------------------------------------------------------

    async def poll(self, job: JobHandle) -> PollResult:
        """The job's status from its files; restarts a job an earlier process left unfinished.

        Raises:
            JobFailed: the service has no such job.
        """
        base = self.jobs_dir / job.job_id
        if (self.jobs_dir / f"{job.job_id}.cancelled").exists():
            return PollResult(JobStatus.CANCELLED, raw_status="cancelled")
        if base.with_suffix(".mp4").exists():
            return PollResult(JobStatus.SUCCEEDED, raw_status="succeeded", progress=1.0)
        error = base.with_suffix(".error")
        if error.exists():
            message = error.read_text()
            return PollResult(JobStatus.FAILED, raw_status="failed", message=message, refunded=True)
        if job.job_id not in self._active:
            spec = base.with_suffix(".json")
            if not spec.exists():
                raise JobFailed(f"no such job {job.job_id}", provider=NAME, refunded=None)
            self._start(job.job_id, json.loads(spec.read_text()))
        started = self._active.get(job.job_id, time.time())
        queued = time.time() - started < self.latency_s
        return PollResult(
            JobStatus.QUEUED if queued else JobStatus.RUNNING,
            raw_status="queued" if queued else "rendering",
            eta_s=max(0.0, self.latency_s - (time.time() - started)) or None,
        )

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        """Stream the rendered clip.

        Raises:
            FetchError: the clip is gone (``expired``: poll again re-renders nothing, so this
                is final unless the job still has its request).
        """
        path = self.jobs_dir / f"{job.job_id}.mp4"
        try:
            fh = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise FetchError(f"{job.job_id}: the rendered clip is gone", provider=NAME) from None
        size = (await anyio.Path(path).stat()).st_size

        async def chunks() -> AsyncIterator[bytes]:
            while block := await fh.read(CHUNK):
                yield block

        try:
            yield Download(chunks(), size=size, content_type="video/mp4")
        finally:
            await fh.aclose()

    # ----- optional protocols ------------------------------------------------------------------

    async def reconcile(self, shot: Shot, *, key: str, since: float) -> JobHandle | None:
        """Find the job created for ``key`` in the service's ledger (None: it was never created)."""
        ledger = self.root / "ledger.jsonl"
        text = await anyio.Path(ledger).read_text() if ledger.exists() else ""
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("key") == key:
                return JobHandle(NAME, str(entry["job"]), shot.model, float(entry["ts"]))
        return None

    async def cancel(self, job: JobHandle) -> None:
        """Cancel a queued or rendering job.

        Raises:
            Rejected: the job already finished.
        """
        if (self.jobs_dir / f"{job.job_id}.mp4").exists():
            raise Rejected(f"{job.job_id} already finished", provider=NAME, status=409)
        (self.jobs_dir / f"{job.job_id}.cancelled").write_text("cancelled\n")
        scope = self._scopes.get(job.job_id)
        if scope is not None:
            scope.cancel()


def _path_of(url: str) -> str:
    return unquote(urlsplit(url).path)


def _request(shot: Shot, media: Sequence[MediaRef]) -> dict[str, Any]:
    from pipeline.render.clips import frame_size  # PyAV and Pillow: loaded on first use

    by_role: dict[MediaRole, list[str]] = {}
    for ref in media:
        by_role.setdefault(ref.role, []).append(_path_of(ref.url))
    width, height = frame_size(shot.aspect_ratio, shot.resolution)
    take = f" · take {shot.take}" if shot.take else ""
    return {
        "title": shot.id,
        "subtitle": f"{shot.provider}/{shot.model}{take} · {shot.duration}s {shot.aspect_ratio}",
        "prompt": shot.prompt,
        "duration_s": shot.duration,
        "width": width,
        "height": height,
        "fps": FPS,
        "seed": shot.seed or 0,
        "image": next(iter(by_role.get(MediaRole.IMAGE, [])), None),
        "end_image": next(iter(by_role.get(MediaRole.END_IMAGE, [])), None),
        "references": by_role.get(MediaRole.REFERENCE_IMAGE, [])[:4],
    }


def _clip_spec(req: dict[str, Any]) -> ClipSpec:
    from pipeline.render.clips import ClipSpec

    return ClipSpec(
        title=req["title"],
        prompt=req["prompt"],
        duration_s=int(req["duration_s"]),
        width=int(req["width"]),
        height=int(req["height"]),
        fps=int(req["fps"]),
        image=Path(req["image"]) if req.get("image") else None,
        end_image=Path(req["end_image"]) if req.get("end_image") else None,
        references=tuple(Path(p) for p in req.get("references", [])),
        seed=int(req["seed"]),
        subtitle=req.get("subtitle", ""),
    )


def _check(shot: Shot, caps: ModelCaps) -> list[tuple[str, str]]:
    issues = []
    for name, asset in (("image", shot.image), ("end_image", shot.end_image)):
        if asset is not None and asset.path is None:
            issues.append((name, "the local renderer works offline: give a local file, not a URL"))
    if any(r.path is None for r in shot.references):
        issues.append(("references", "the local renderer works offline: use local files"))
    return issues


SPEC = ProviderSpec(
    name=NAME,
    factory=LocalProvider,
    models=MappingProxyType({"previz": PREVIZ}),
    defaults=ProviderSettings(
        max_in_flight=4, poll_min_s=0.05, poll_max_s=0.5, poll_deadline_s=600.0, latency_s=0.0
    ),
    needs_api_key=False,
    check=_check,
    default_model="previz",
    media=MediaPolicy(file_urls=True),
    free=True,
)
