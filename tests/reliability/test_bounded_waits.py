"""Every wait is bounded: a hostile provider on loopback against the real RelayDance adapter.

Retry-After is clamped and never outlasts a poll's deadline; answers and downloads that drip
are cut (read timeout, throughput floor); redirect loops are refused; oversized API answers are
refused at the cap without being read whole.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from pipeline.engine import retry
from pipeline.engine.guarded import GuardedCalls
from pipeline.engine.limits import CallKind, PausedPastDeadline, ProviderGate
from pipeline.engine.options import RunOptions
from pipeline.errors import Ambiguous, FetchError, RateLimited
from pipeline.models import JobHandle, ShotState
from pipeline.providers.base import ProviderContext
from pipeline.providers.http import HttpLimits
from pipeline.providers.relaydance.adapter import RelayDanceProvider
from pipeline.providers.relaydance.spec import SPEC
from pipeline.providers.urlfetch import UrlFetcher, UrlPolicy
from pipeline.settings import DownloadSettings
from pipeline.sim.common import serve
from tests.provider_helpers import make_shot
from tests.reliability.harness import manifest, run

KEY = "sk-hostile-0123456789"
SHOT = make_shot("relaydance", "doubao-seedance-2-0-720p")
HANG_GUARD_S = 30
RUNNING = {"task_id": "t0", "status": "running"}


class Hostile:
    """A RelayDance-shaped server whose answers are set per test; counts what it saw."""

    def __init__(self) -> None:
        self.submits: list[int] = []  # statuses answered
        self.polls = 0
        self.submit_statuses: list[int] = []  # queued statuses for the next submits
        self.retry_after = "100000"
        self.poll_handler: Any = None
        self.poll_json: dict[str, Any] = RUNNING
        self.sent = 0  # body bytes written by the streaming handlers
        self.stream_done = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/video/generations", self.submit)
        app.router.add_get("/v1/video/generations/{task}", self.poll)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/loop", self.loop)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    async def submit(self, request: web.Request) -> web.Response:
        status = self.submit_statuses.pop(0) if self.submit_statuses else 200
        self.submits.append(status)
        if status == 429:
            return web.json_response(
                {"error": {"message": "slow down"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        return web.json_response({"task_id": f"t{len(self.submits) - 1}", "status": "queued"})

    async def poll(self, request: web.Request) -> web.StreamResponse:
        self.polls += 1
        if self.poll_handler is not None:
            response: web.StreamResponse = await self.poll_handler(request)
            return response
        return web.json_response(self.poll_json)

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def drip(self, request: web.Request, interval_s: float) -> web.StreamResponse:
        """Headers, then one byte every ``interval_s`` (of a declared 100-byte body)."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 100
        await resp.prepare(request)
        try:
            for _ in range(100):
                await resp.write(b" ")
                self.sent += 1
                await asyncio.sleep(interval_s)
        finally:
            self.stream_done.set()
        return resp

    async def flood(self, request: web.Request, declared: int | None) -> web.StreamResponse:
        """An endless (or 300 MB-declared) JSON-typed body, written until the client leaves."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared is not None:
            resp.content_length = declared
        await resp.prepare(request)
        piece = b"x" * 65536
        try:
            while self.sent < 300 * 1024 * 1024:
                await resp.write(piece)
                self.sent += len(piece)
        except (ConnectionError, RuntimeError):
            pass  # the client dropped the connection: what we want
        finally:
            self.stream_done.set()
        return resp


@asynccontextmanager
async def adapter(
    hostile: Hostile, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[RelayDanceProvider, ProviderContext, str]]:
    """The RelayDance adapter against ``hostile``, with ``settings`` over its defaults."""
    async with serve(hostile.app()) as origin:
        merged = SPEC.defaults.model_copy(update={"base_url": f"{origin}/v1", **settings})
        ctx = ProviderContext(
            name="relaydance", settings=merged, run_dir=tmp_path, api_key=KEY, simulate=True
        )
        async with RelayDanceProvider(ctx) as provider:
            yield provider, ctx, origin


def job(submitted_at: float | None = None) -> JobHandle:
    return JobHandle("relaydance", "t0", SHOT.model, submitted_at or time.time())


async def submit(provider: RelayDanceProvider, calls: GuardedCalls) -> JobHandle:
    """A submit as the stage machine does it: gate, then the paid call, retried on 429."""

    async def once() -> JobHandle:
        await calls.gate.ready(CallKind.SUBMIT)
        return await provider.submit(SHOT, [], key="k")

    return await retry.call(lambda: calls.backoff(retry.submit_retryable), once)


async def drain(fetcher: UrlFetcher, url: str) -> int:
    """Read the whole download at ``url``; its size."""
    size = 0
    async with fetcher.open(url) as download:
        async for chunk in download.chunks:
            size += len(chunk)
    return size


# ----- (a) (b) Retry-After ----------------------------------------------------------------------


async def test_a_huge_retry_after_is_clamped_to_the_cap_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = Hostile()
    hostile.submit_statuses = [429, 429]
    cap = 0.2
    async with adapter(hostile, tmp_path, max_retry_after_s=cap) as (provider, ctx, _):
        gate = ProviderGate("relaydance", ctx.settings)
        pauses: list[float] = []
        pause = gate.pause

        def spy(seconds: float) -> None:
            pause(seconds)
            pauses.append(gate.paused_for)

        gate.pause = spy  # type: ignore[method-assign]
        calls = GuardedCalls(provider, gate)
        with caplog.at_level(logging.WARNING, logger="pipeline.engine.limits"):
            with anyio.fail_after(HANG_GUARD_S):
                handle = await submit(provider, calls)
    assert handle.job_id == "t2"
    assert hostile.submits == [429, 429, 200]
    assert len(pauses) == 2
    assert all(0 < p <= cap for p in pauses)  # 100000 s asked, the cap used
    clamps = [r for r in caplog.records if "max_retry_after_s" in r.getMessage()]
    assert len(clamps) == 1
    assert "100000" in clamps[0].getMessage()


async def test_a_backoff_floor_is_clamped_too() -> None:
    hook = retry.Backoff(retry.submit_retryable, max_retry_after_s=5.0)
    assert hook(RateLimited("429", retry_after=100000.0)) == 5.0


async def test_b_a_submit_pause_does_not_hold_a_paid_poll_past_its_deadline(
    tmp_path: Path,
) -> None:
    hostile = Hostile()
    hostile.submit_statuses = [429]
    async with adapter(hostile, tmp_path, max_retry_after_s=3600.0) as (provider, ctx, _):
        gate = ProviderGate("relaydance", ctx.settings)
        calls = GuardedCalls(provider, gate)
        with pytest.raises(RateLimited):  # the submit is paused: it would wait for an hour
            await provider.submit(SHOT, [], key="k")
        calls.backoff(retry.submit_retryable)(RateLimited("429", retry_after=100000.0))
        assert gate.paused_for > 3000  # clamped to the (large) cap, still in force
        paid = job()
        with anyio.fail_after(HANG_GUARD_S):
            with pytest.raises(PausedPastDeadline):
                await calls.call(
                    lambda: provider.poll(paid), CallKind.POLL, deadline=time.time() + 0.5
                )
    assert hostile.polls == 0  # the pause was respected up to the deadline
    assert not retry.idempotent_retryable(PausedPastDeadline("x"))


async def test_b_poll_loop_ends_at_its_deadline_while_the_provider_is_paused(
    tmp_path: Path,
) -> None:
    """End to end: a 429 on a paid job's poll (Retry-After 100000, default cap 600 s) pauses the
    provider; the shot still fails "timed out" at its 1 s poll deadline."""
    hostile = Hostile()

    async def limited(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "slow"}}, status=429, headers={"Retry-After": "100000"}
        )

    hostile.poll_handler = limited
    async with serve(hostile.app()) as origin:
        path = manifest(tmp_path, "relaydance", 1, name="paused")
        options = RunOptions(
            simulate=True,
            base_urls={"relaydance": f"{origin}/v1"},
            api_keys={"relaydance": KEY},
            overrides={"relaydance": {"poll_min_s": 0.05, "poll_max_s": 0.2, "poll_deadline_s": 1}},
        )
        with anyio.fail_after(HANG_GUARD_S):
            _, result = await run(path, options)
    rec = result.state.shots["a-s00"]
    assert rec.state == ShotState.FAILED
    assert "timed out" in (rec.error or "")
    assert hostile.submits == [200]
    assert hostile.polls == 1  # the pause held every later poll; the deadline ended the wait


# ----- (c) (d) drips ------------------------------------------------------------------------------


async def test_c_a_poll_answer_that_drips_is_cut_by_the_read_timeout(tmp_path: Path) -> None:
    hostile = Hostile()
    hostile.poll_handler = lambda request: hostile.drip(request, 1.0)
    async with adapter(hostile, tmp_path, read_timeout_s=0.3, request_timeout_s=5.0) as (
        provider,
        _,
        _,
    ):
        with anyio.fail_after(HANG_GUARD_S):
            with pytest.raises(Ambiguous, match="no complete answer") as caught:
                await provider.poll(job())
    assert retry.idempotent_retryable(caught.value)  # polled again, never a hang
    assert hostile.sent < 100


async def test_c_a_poll_answer_that_drips_faster_than_the_read_timeout_hits_the_total(
    tmp_path: Path,
) -> None:
    hostile = Hostile()
    hostile.poll_handler = lambda request: hostile.drip(request, 0.1)
    async with adapter(hostile, tmp_path, read_timeout_s=5.0, request_timeout_s=1.0) as (
        provider,
        _,
        _,
    ):
        with anyio.fail_after(HANG_GUARD_S):
            with pytest.raises(Ambiguous) as caught:
                await provider.poll(job())
    assert retry.idempotent_retryable(caught.value)
    assert hostile.sent < 100


async def test_d_a_download_that_drips_is_cut_by_the_throughput_floor() -> None:
    hostile = Hostile()

    async def video(request: web.Request) -> web.StreamResponse:
        return await hostile.drip(request, 0.2)

    app = web.Application()
    app.router.add_get("/video.mp4", video)
    downloads = DownloadSettings(min_bytes_per_s=1024, throughput_window_s=0.5)
    limits = HttpLimits.of(SPEC.defaults.model_copy(update={"read_timeout_s": 5.0}), downloads)
    async with serve(app) as origin:
        policy = UrlPolicy(allow_hosts={origin.split("//")[1]}, limits=limits)
        fetcher = UrlFetcher(policy, provider="relaydance")
        try:
            with anyio.fail_after(HANG_GUARD_S):
                with pytest.raises(FetchError, match="too slow") as caught:
                    await drain(fetcher, f"{origin}/video.mp4")
        finally:
            await fetcher.aclose()
    assert not caught.value.rejected
    assert not caught.value.expired
    assert retry.idempotent_retryable(caught.value)  # the fetch is tried again
    assert hostile.sent < 100


# ----- (e) redirects --------------------------------------------------------------------------


async def test_e_a_redirect_loop_fails_the_shot_download_rejected(tmp_path: Path) -> None:
    hostile = Hostile()
    async with serve(hostile.app()) as origin:
        hostile.poll_json = {"task_id": "t0", "status": "succeeded", "url": f"{origin}/loop"}
        path = manifest(tmp_path, "relaydance", 1, name="loop")
        options = RunOptions(
            simulate=True,
            base_urls={"relaydance": f"{origin}/v1"},
            api_keys={"relaydance": KEY},
            overrides={"relaydance": {"poll_min_s": 0.05, "poll_max_s": 0.2}},
        )
        with anyio.fail_after(HANG_GUARD_S):
            _, result = await run(path, options)
    rec = result.state.shots["a-s00"]
    assert rec.state == ShotState.FAILED  # not left in ``fetching``
    assert (rec.error or "").startswith("download_rejected")
    assert "redirects" in (rec.error or "")
    assert hostile.submits == [200]


# ----- (f) answer size cap ----------------------------------------------------------------------


@pytest.mark.parametrize("declared", [300 * 1024 * 1024, None], ids=["declared-300MB", "endless"])
async def test_f_an_oversized_poll_answer_is_refused_at_the_cap(
    tmp_path: Path, declared: int | None
) -> None:
    hostile = Hostile()
    hostile.poll_handler = lambda request: hostile.flood(request, declared)
    cap = 256 * 1024
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    async with adapter(hostile, tmp_path, max_response_bytes=cap) as (provider, _, _):
        with anyio.fail_after(HANG_GUARD_S):
            with pytest.raises(Ambiguous, match="larger than the cap") as caught:
                await provider.poll(job())
            await hostile.stream_done.wait()  # the server stopped: the client hung up
    assert retry.idempotent_retryable(caught.value)  # a failed poll, retried per policy
    # Only socket buffers beyond the cap were sent, nowhere near 300 MB.
    assert hostile.sent < 32 * 1024 * 1024
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 100
