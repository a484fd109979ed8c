"""An in-memory provider for runner tests: a ledger of charges, scripted faults, a concurrency spy.

It satisfies the Provider Protocol (and SupportsReconcile) without inheriting anything, like
httpx's MockTransport. Job state lives in a ``FakeService`` shared across provider instances so a
"restarted" runner talks to the same service.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

import anyio
import anyio.lowlevel

from pipeline.errors import Ambiguous, FetchError, JobFailed, NotSent, RateLimited, Rejected
from pipeline.models import (
    Download,
    JobHandle,
    JobStatus,
    MediaRef,
    ModelCaps,
    PollResult,
    Shot,
)
from pipeline.providers.base import MediaPolicy, ProviderContext, ProviderSpec
from pipeline.render.clips import tiny_mp4
from pipeline.settings import ProviderSettings

#: Seconds of the fake's clips unless a shot asks for another duration (the tests' manifests).
FAKE_SECONDS = 2


@lru_cache(maxsize=32)
def clip(seconds: int = FAKE_SECONDS) -> bytes:
    """A real, playable H.264 MP4 of ``seconds`` (160x90, 6 fps, a few kB; rendered once)."""
    return tiny_mp4(seconds, label="fake")


def free_box(payload: bytes) -> bytes:
    """An ISO BMFF ``free`` box: demuxers skip it, so a video stays playable with it appended."""
    return struct.pack(">I", 8 + len(payload)) + b"free" + payload


def video(job_id: str, seconds: int = FAKE_SECONDS) -> bytes:
    """The bytes the fake serves for ``job_id``: a real clip, distinct per job (a ``free`` box)."""
    return clip(seconds) + free_box(job_id.encode())


def padded(body: bytes, size: int, seed: int = 0) -> bytes:
    """``body`` (a playable video) grown to exactly ``size`` bytes by a ``free`` box of noise."""
    assert size >= len(body) + 8
    return body + free_box(random.Random(seed).randbytes(size - len(body) - 8))


#: A real clip of the fake's default duration (also ``FakeJob``'s default body).
FAKE_MP4 = clip()


@dataclass
class FakeJob:
    job_id: str
    key: str
    shot: str
    created: float
    polls_left: int
    status: JobStatus = JobStatus.QUEUED
    body: bytes = FAKE_MP4


@dataclass
class FakeService:
    """The provider's side: jobs, the charge ledger and scripted faults (popped in order)."""

    polls_to_finish: int = 2
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    ledger: list[str] = field(default_factory=list)  # shot id per accepted (charged) submit
    # not_sent | rate | reject | ambiguous | lost (job created, answer lost) | 5xx (nothing created)
    submit_faults: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # "submit", "poll", "probe" in call order
    healthy: bool = True  # what probe() reports
    body_override: bytes | None = None  # served instead of every job's video
    next_bodies: list[bytes] = field(default_factory=list)  # served first, one per fetch
    fetches: int = 0  # fetch attempts that reached the body (after expire_fetches)
    stuck_raw: str = ""  # when set, polls report this unknown provider status (normalised RUNNING)
    fail_shots: set[str] = field(default_factory=set)  # jobs for these shots fail (refunded)
    expire_fetches: int = 0  # the next N fetches answer "URL expired"
    media: list[list[tuple[str, str]]] = field(default_factory=list)  # per submit: (role, url)
    in_flight: int = 0
    max_in_flight: int = 0
    submits: int = 0

    def _job_done(self, job: FakeJob) -> None:
        self.in_flight -= 1


class FakeProvider:
    """The adapter side, built per run from the spec's factory."""

    name = "fake"

    def __init__(self, ctx: ProviderContext, service: FakeService) -> None:
        self.ctx = ctx
        self.service = service
        self.closed = False

    async def __aenter__(self) -> FakeProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closed = True

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        svc = self.service
        svc.submits += 1
        svc.calls.append("submit")
        svc.media.append([(m.role.value, m.url) for m in media])
        fault = svc.submit_faults.pop(0) if svc.submit_faults else ""
        await anyio.lowlevel.checkpoint()
        if fault == "not_sent":
            raise NotSent("connection refused", provider="fake", shot=shot.id)
        if fault == "rate":
            raise RateLimited("429", retry_after=0.01, provider="fake", shot=shot.id)
        if fault == "reject":
            raise Rejected("prompt rejected", provider="fake", shot=shot.id, status=400)
        if fault == "5xx":
            raise Ambiguous("HTTP 503: upstream unavailable", provider="fake", status=503)
        job_id = f"job-{len(svc.jobs) + 1}"
        body = video(job_id, shot.duration)
        job = FakeJob(job_id, key, shot.id, time.time(), svc.polls_to_finish, body=body)
        svc.jobs[job.job_id] = job
        svc.ledger.append(shot.id)
        svc.in_flight += 1
        svc.max_in_flight = max(svc.max_in_flight, svc.in_flight)
        if fault in ("ambiguous", "lost"):
            raise Ambiguous("connection reset after send", provider="fake", shot=shot.id)
        return JobHandle("fake", job.job_id, shot.model, time.time())

    async def poll(self, job: JobHandle) -> PollResult:
        await anyio.lowlevel.checkpoint()
        self.service.calls.append("poll")
        fj = self.service.jobs.get(job.job_id)
        if fj is None:
            raise JobFailed("unknown job", provider="fake")
        if self.service.stuck_raw:
            return PollResult(JobStatus.RUNNING, raw_status=self.service.stuck_raw)
        if fj.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            fj.polls_left -= 1
            fj.status = JobStatus.RUNNING
            if fj.polls_left <= 0:
                failed = fj.shot in self.service.fail_shots
                fj.status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
                self.service._job_done(fj)
        return PollResult(
            fj.status,
            raw_status=fj.status.value,
            result_url=f"https://cdn.example/{fj.job_id}.mp4",
            message="moderation" if fj.status == JobStatus.FAILED else "",
            refunded=True if fj.status == JobStatus.FAILED else None,
        )

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        if self.service.expire_fetches > 0:
            self.service.expire_fetches -= 1
            raise FetchError("URL expired", expired=True, provider="fake", status=410)
        svc = self.service
        svc.fetches += 1
        if svc.next_bodies:
            body = svc.next_bodies.pop(0)
        else:
            body = svc.body_override or svc.jobs[job.job_id].body

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 32):
                yield body[i : i + 32]

        yield Download(chunks(), size=len(body), content_type="video/mp4")

    async def probe(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.service.calls.append("probe")
        if not self.service.healthy:
            raise Ambiguous("HTTP 503: still unavailable", provider="fake", status=503)

    async def reconcile(self, shot: Shot, *, key: str, since: float) -> JobHandle | None:
        for fj in self.service.jobs.values():
            if fj.key == key:
                return JobHandle("fake", fj.job_id, shot.model, fj.created)
        return None


def fake_spec(
    service: FakeService,
    *,
    max_in_flight: int = 3,
    reconcile: bool = True,
    media: MediaPolicy | None = None,
) -> ProviderSpec:
    """A registry entry named ``fake`` whose factory builds providers on ``service``."""
    caps = ModelCaps(
        durations=tuple(range(1, 31)),
        aspect_ratios=("16:9", "9:16", "1:1", "21:9"),
        end_frame=True,
        max_reference_images=4,
    )

    def factory(ctx: ProviderContext) -> FakeProvider:
        provider = FakeProvider(ctx, service) if reconcile else _NoReconcile(ctx, service)
        return provider

    return ProviderSpec(
        name="fake",
        factory=factory,
        models=MappingProxyType({"m1": caps}),
        defaults=ProviderSettings(
            max_in_flight=max_in_flight, poll_min_s=0.001, poll_max_s=0.002, poll_deadline_s=60
        ),
        needs_api_key=False,
        media=media or MediaPolicy(data_urls=True, max_inline_bytes=1 << 20),
    )


class _NoReconcile(FakeProvider):
    reconcile = None  # type: ignore[assignment]
