"""A benchmark provider: fixed, seeded job latencies, no rendering, tiny fixed MP4 bytes.

It measures the orchestration itself (scheduling, polling, checkpointing, fetching), not a
service: submit answers at once, a job runs for its drawn latency from the moment it is
submitted, ``poll`` is O(1), and the result is the same ~100-byte MP4 for every job. The
provider's account concurrency is what the runner's ``max_in_flight`` gate enforces.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from pipeline.errors import JobFailed
from pipeline.models import Download, JobHandle, JobStatus, MediaRef, ModelCaps, PollResult, Shot
from pipeline.providers.base import ProviderContext, ProviderSpec
from pipeline.render.clips import tiny_mp4
from pipeline.settings import ProviderSettings

#: A real 5 s H.264 clip (160 px, 6 fps, a few kB): every fetched video is demuxed and its
#: first and last frames decoded before it is ``done``, as a provider's would be.
TINY_MP4 = tiny_mp4(5, label="bench")


@dataclass
class BenchService:
    """The benchmark "provider side": latencies per shot, submit times, poll counts."""

    latencies: dict[str, float]
    eta_hint: bool = True
    submitted: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    submits: int = 0
    done_at: dict[str, float] = field(default_factory=dict)

    @classmethod
    def seeded(
        cls, ids: Sequence[str], low: float, high: float, seed: int, *, eta_hint: bool = True
    ) -> BenchService:
        """Latencies drawn uniformly from [low, high] seconds, reproducibly."""
        rng = random.Random(seed)
        return cls(latencies={i: rng.uniform(low, high) for i in ids}, eta_hint=eta_hint)


class BenchProvider:
    name = "bench"

    def __init__(self, ctx: ProviderContext, service: BenchService) -> None:
        self.service = service

    async def __aenter__(self) -> BenchProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        svc = self.service
        svc.submits += 1
        now = time.monotonic()
        svc.submitted[shot.id] = now
        return JobHandle("bench", shot.id, shot.model, time.time())

    async def poll(self, job: JobHandle) -> PollResult:
        svc = self.service
        svc.polls += 1
        start = svc.submitted.get(job.job_id)
        if start is None:
            raise JobFailed("unknown job", provider="bench")
        left = start + svc.latencies[job.job_id] - time.monotonic()
        if left <= 0:
            svc.done_at.setdefault(job.job_id, time.monotonic())
            return PollResult(JobStatus.SUCCEEDED, raw_status="done")
        return PollResult(
            JobStatus.RUNNING, raw_status="running", eta_s=left if svc.eta_hint else None
        )

    @asynccontextmanager
    async def fetch(self, job: JobHandle, result: PollResult) -> AsyncIterator[Download]:
        async def chunks() -> AsyncIterator[bytes]:
            yield TINY_MP4

        yield Download(chunks(), size=len(TINY_MP4), content_type="video/mp4")


def bench_spec(service: BenchService, settings: ProviderSettings) -> ProviderSpec:
    """A registry entry ``bench`` (model ``m``, 1-30 s, any common ratio) on ``service``."""
    caps = ModelCaps(durations=tuple(range(1, 31)), aspect_ratios=("16:9",))
    return ProviderSpec(
        name="bench",
        factory=lambda ctx: BenchProvider(ctx, service),
        models=MappingProxyType({"m": caps}),
        defaults=settings,
        needs_api_key=False,
    )
