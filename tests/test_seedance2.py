"""seedance2.ink: codec on recorded bodies (seedance2.md §2), adapter against the simulator."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

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
    Asset,
    JobHandle,
    JobStatus,
    MediaRef,
    MediaRole,
    PollResult,
    Shot,
)
from pipeline.providers.base import ProviderContext, SupportsCancel
from pipeline.providers.codec_errors import MalformedAnswer, ProviderRefused
from pipeline.providers.seedance2 import answers, codec
from pipeline.providers.seedance2.adapter import Seedance2Provider
from pipeline.providers.seedance2.spec import SPEC
from pipeline.render.clips import probe
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig, serve
from pipeline.sim.seedance2 import app as sim
from tests import provider_helpers
from tests.provider_helpers import (
    assert_refuses_use,
    load_json,
    provider_context,
    served_adapter,
)

KEY = "sd2_live_secretkey123"


def load(name: str) -> Any:
    return load_json("seedance2", name)


#: Fields every seedance2 shot here has unless a test overrides them.
SHOT_FIELDS: dict[str, Any] = {
    "prompt": "A lighthouse at dawn, waves crashing",
    "duration": 4,
    "resolution": "720p",
}


def make_shot(model: str = "seedance-2.0", **overrides: Any) -> Shot:
    return provider_helpers.make_shot("seedance2", model, **(SHOT_FIELDS | overrides))


def ref(role: MediaRole, name: str) -> MediaRef:
    return MediaRef(role=role, url=f"https://cdn.example/{name}")


def context(
    base_url: str, tmp_path: Path, *, key: str | None = KEY, simulate: bool = True
) -> ProviderContext:
    return provider_context(SPEC, base_url, tmp_path, key=key, simulate=simulate)


@asynccontextmanager
async def adapter_for(
    app: web.Application, tmp_path: Path, *, key: str | None = KEY
) -> AsyncIterator[Seedance2Provider]:
    async with served_adapter(SPEC, Seedance2Provider, app, tmp_path, key=key) as (provider, _):
        yield provider


def sim_app(**options: Any) -> web.Application:
    config = options.pop("config", None) or SimConfig(api_key=KEY, latency_s=0.2)
    return sim.make_app(config, **options)


async def until_terminal(provider: Seedance2Provider, job: JobHandle) -> list[PollResult]:
    seen: list[PollResult] = []
    with anyio.fail_after(3):
        while True:
            result = await provider.poll(job)
            seen.append(result)
            if result.status in answers.TERMINAL:
                return seen
            await anyio.sleep(0.03)


async def collect(
    provider: Seedance2Provider, job: JobHandle, result: PollResult, into: bytearray
) -> None:
    async with provider.fetch(job, result) as download:
        async for chunk in download.chunks:
            into += chunk


async def read_all(provider: Seedance2Provider, job: JobHandle, result: PollResult) -> bytes:
    async with provider.fetch(job, result) as download:
        return b"".join([chunk async for chunk in download.chunks])


# ----- codec on recorded bodies ---------------------------------------------------------------


def test_parse_submit_recorded() -> None:
    t2v = answers.parse_submit(load("submit_t2v.json"))
    i2v = answers.parse_submit(load("submit_i2v.json"))
    assert (t2v.request_id, t2v.status, t2v.credits_charged) == ("req_1234567890", "queued", 40)
    assert i2v.credits_charged == 64


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("status_queued.json", JobStatus.QUEUED),
        ("status_processing.json", JobStatus.RUNNING),
        ("status_succeeded.json", JobStatus.SUCCEEDED),
        ("status_failed.json", JobStatus.FAILED),
        ("status_cancelled.json", JobStatus.CANCELLED),
    ],
)
def test_parse_status_recorded(name: str, status: JobStatus) -> None:
    result = answers.parse_status(load(name))
    assert result.status is status
    assert result.raw_status == load(name)["status"]
    if status is JobStatus.SUCCEEDED:
        assert result.result_url == load(name)["output"]["url"]
    else:
        assert result.result_url is None
    if status is JobStatus.FAILED:
        assert result.message == "content_policy: The prompt was flagged by moderation"
        assert result.refunded is None  # refunds are not documented


@pytest.mark.parametrize(("raw", "expected"), sorted(answers.STATUS_SYNONYMS.items()))
def test_every_status_synonym_case_insensitive(raw: str, expected: JobStatus) -> None:
    for spelling in (raw, raw.upper(), f" {raw.title()} "):
        assert answers.normalize_status(spelling) is expected


@pytest.mark.parametrize("raw", ["UNKNOWN", "rendering_v2", "", None, 7])
def test_unknown_status_is_running(raw: object) -> None:
    assert answers.normalize_status(raw) is JobStatus.RUNNING
    body = {**load("status_queued.json"), "status": raw}
    assert answers.parse_status(body).status is JobStatus.RUNNING


def test_succeeded_without_url_keeps_polling() -> None:
    body = {**load("status_succeeded.json"), "output": None}
    assert answers.parse_status(body).status is JobStatus.RUNNING


def test_failed_task_error_shapes() -> None:
    as_text = {**load("status_failed.json"), "error": "render crashed"}
    assert answers.parse_status(as_text).message == "unknown: render crashed"
    missing = {**load("status_failed.json"), "error": None}
    assert "without an error object" in answers.parse_status(missing).message


def test_envelope_success_is_checked_before_status() -> None:
    body = {**load("status_succeeded.json"), "success": False}
    with pytest.raises(ProviderRefused):
        answers.parse_status(body)
    with pytest.raises(ProviderRefused) as info:
        answers.parse_submit(load("error_unauthorized.json"))
    assert info.value.code == "unauthorized"
    assert info.value.message == load("error_unauthorized.json")["error"]["message"]
    assert answers.refusal_error(info.value) == answers.parse_error(load("error_unauthorized.json"))


@pytest.mark.parametrize(
    ("name", "code", "kind"),
    [
        ("error_unauthorized.json", "unauthorized", answers.ErrorKind.REJECTED),
        ("error_validation.json", "invalid_duration", answers.ErrorKind.REJECTED),
        ("error_rate_limited.json", "rate_limited", answers.ErrorKind.RATE_LIMITED),
    ],
)
def test_error_bodies(name: str, code: str, kind: answers.ErrorKind) -> None:
    error = answers.parse_error(load(name))
    assert error is not None
    assert error.code == code
    assert error.message == load(name)["error"]["message"]
    assert answers.classify(error.code) is kind


def test_error_parsing_edge_cases() -> None:
    assert answers.classify("NOT_FOUND") is answers.ErrorKind.NOT_FOUND
    assert answers.classify("mystery_glitch") is answers.ErrorKind.UNKNOWN
    assert answers.parse_error({"success": False, "error": "boom"}) == answers.ApiError(
        message="boom"
    )
    assert answers.parse_error({"success": False}) == answers.ApiError()
    assert answers.parse_error(load("submit_t2v.json")) is None
    assert answers.parse_error("<html>") is None


@pytest.mark.parametrize(
    "payload",
    [None, "text", {}, {"success": "true", "requestId": "r"}, {"success": True}],
)
def test_malformed_submit_answers(payload: Any) -> None:
    with pytest.raises(MalformedAnswer):
        answers.parse_submit(payload)


def test_build_submit_text_to_video() -> None:
    body = codec.build_submit(make_shot(duration=5), [], key="run:harbor-s01:1")
    assert body == {
        "model": "seedance-2.0",
        "prompt": "A lighthouse at dawn, waves crashing",
        "aspectRatio": "16:9",
        "duration": 5,
        "resolution": "720p",
        "metadata": {"client_ref": "run:harbor-s01:1"},
    }
    assert type(body["duration"]) is int


def test_build_submit_orders_media_and_merges_extra() -> None:
    media = [
        ref(MediaRole.REFERENCE_VIDEO, "move.mp4"),
        ref(MediaRole.END_IMAGE, "end.png"),
        ref(MediaRole.IMAGE, "first.png"),
        ref(MediaRole.REFERENCE_AUDIO, "beat.mp3"),
    ]
    extra = {"webhookUrl": "https://hooks.example/x", "metadata": {"team": "previs"}}
    body = codec.build_submit(make_shot(resolution=None, extra=extra), media, key="k1")
    assert body["mediaUrls"] == [
        "https://cdn.example/first.png",
        "https://cdn.example/end.png",
        "https://cdn.example/move.mp4",
        "https://cdn.example/beat.mp3",
    ]
    assert body["webhookUrl"] == "https://hooks.example/x"
    assert body["metadata"] == {"team": "previs", "client_ref": "k1"}
    assert "resolution" not in body


def test_api_base_and_paths() -> None:
    assert codec.api_base("https://www.seedance2.ink/") == "https://www.seedance2.ink/api/open/v1"
    assert codec.api_base("http://h:1/api/open/v1") == "http://h:1/api/open/v1"
    assert codec.cancel_path("req/1") == "video/generations/req%2F1/cancel"


def test_spec_capabilities_match_recorded_models() -> None:
    recorded = {entry["id"]: entry for entry in load("models.json")["data"]}
    assert set(SPEC.models) == set(recorded)
    for model, caps in SPEC.models.items():
        assert list(caps.durations) == recorded[model]["durations"]
        assert list(caps.aspect_ratios) == recorded[model]["aspectRatios"]
        assert list(caps.resolutions) == recorded[model]["resolutions"]
    assert SPEC.defaults.base_url == "https://www.seedance2.ink"
    assert SPEC.defaults.api_key_env == "SEEDANCE2_API_KEY"
    assert (SPEC.media.data_urls, SPEC.needs_api_key, SPEC.default_model) == (
        False,
        True,
        "seedance-2.0",
    )


def test_check_media_rules() -> None:
    caps = SPEC.models["seedance-2.0"]
    assert SPEC.check is not None
    url = "https://cdn.example/a.png"
    first = Asset(MediaRole.IMAGE, url=url)
    refs = tuple(Asset(MediaRole.REFERENCE_IMAGE, url=url) for _ in range(4))
    assert SPEC.check(make_shot(image=first, references=refs[:4]), caps) == []
    too_many = SPEC.check(make_shot(image=first, end_image=first, references=refs), caps)
    assert [f for f, _ in too_many] == ["references"]
    assert "this shot has 6" in too_many[0][1]
    lone_end = SPEC.check(make_shot(end_image=first), caps)
    assert [f for f, _ in lone_end] == ["end_image"]
    data_url = Asset(MediaRole.IMAGE, url="data:image/png;base64,AAAA")
    assert "data:" in SPEC.check(make_shot(image=data_url), caps)[0][1]


# ----- media URLs -----------------------------------------------------------------------


async def test_submit_refuses_media_urls_the_service_cannot_use(tmp_path: Path) -> None:
    base = "https://www.seedance2.ink"
    async with Seedance2Provider(context(base, tmp_path, simulate=False)) as real:
        for url in (
            "data:image/png;base64,AAAA",
            "http://cdn.example/a.png?sig=secret",
            "ftp://x/a",
        ):
            ref = MediaRef(MediaRole.IMAGE, url=url)
            with pytest.raises(Rejected) as info:  # refused before anything is sent
                await real.submit(make_shot(), [ref], key="k")
            assert "secret" not in str(info.value)


# ----- adapter against the simulator ------------------------------------------------------------


async def test_happy_path_submit_poll_fetch(tmp_path: Path) -> None:
    app = sim_app()
    assert isinstance(Seedance2Provider(context("http://x", tmp_path)), SupportsCancel)
    async with adapter_for(app, tmp_path) as provider:
        shot = make_shot(duration=4)
        job = await provider.submit(shot, [], key="run:harbor-s01:1")
        assert job.job_id.startswith("req_")
        assert (job.provider, job.model, job.credits) == ("seedance2", "seedance-2.0", 32)
        seen = await until_terminal(provider, job)
        assert seen[0].status in (JobStatus.QUEUED, JobStatus.RUNNING)
        assert seen[-1].status is JobStatus.SUCCEEDED
        assert seen[-1].result_url is not None
        data = await read_all(provider, job, seen[-1])
    assert data[4:8] == b"ftyp"
    out = tmp_path / "out.mp4"
    out.write_bytes(data)
    assert probe(out).duration_s == pytest.approx(4, abs=0.5)
    ledger = app[LEDGER]
    assert len(ledger) == 1
    charge = ledger.charges[0]
    assert (charge.job_id, charge.key, charge.credits) == (job.job_id, "run:harbor-s01:1", 32)
    assert not charge.refunded
    assert app[sim.STATE].fetches_with_auth == 0  # result URLs never get the API key


async def test_image_to_video_credits_and_media_order(tmp_path: Path) -> None:
    app = sim_app()
    media = [ref(MediaRole.REFERENCE_IMAGE, "style.png"), ref(MediaRole.IMAGE, "first.png")]
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(duration=5), media, key="k")
    assert job.credits == 64  # the documented I2V 5 s 720p price
    task = app[sim.STATE].tasks[job.job_id]
    assert task.req.media_urls == ["https://cdn.example/first.png", "https://cdn.example/style.png"]


async def test_wrong_key_is_rejected_without_leaking_it(tmp_path: Path) -> None:
    app = sim_app()
    async with adapter_for(app, tmp_path, key="sd2_live_wrongkey999") as provider:
        with pytest.raises(Rejected) as info:
            await provider.submit(make_shot(), [], key="k")
    assert info.value.status == 401
    assert "unauthorized" in str(info.value)
    assert "wrongkey999" not in str(info.value)
    assert len(app[LEDGER]) == 0


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"model": "seedance-3"}, "invalid_model"),
        ({"duration": 3}, "invalid_duration"),
        ({"model": "seedance-1.5-pro", "duration": 7}, "invalid_duration"),
        ({"aspect_ratio": "4:3"}, "invalid_aspect_ratio"),
        ({"resolution": "4k"}, "invalid_resolution"),
    ],
)
async def test_validation_errors_are_rejected(
    tmp_path: Path, overrides: dict[str, Any], code: str
) -> None:
    app = sim_app()
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises(Rejected) as info:
            await provider.submit(make_shot(**overrides), [], key="k")
    assert info.value.status == 400
    assert code in str(info.value)
    assert len(app[LEDGER]) == 0


async def test_more_than_five_media_refused_before_sending(tmp_path: Path) -> None:
    app = sim_app()
    media = [ref(MediaRole.REFERENCE_IMAGE, f"{i}.png") for i in range(6)]
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises(Rejected, match="at most 5"):
            await provider.submit(make_shot(), media, key="k")
    assert app[FAULTS].hits.get("submit", 0) == 0


GOOD = {"model": "seedance-2.0", "prompt": "a gull", "duration": 5}


async def call(url: str, body: Any = None, *, key: str | None = KEY) -> tuple[int, Any]:
    """POST ``body`` (GET when None) to the simulator; returns status and JSON."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        method = "GET" if body is None else "POST"
        async with session.request(method, url, json=body) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "seedance-2.0"}, "invalid_prompt"),
        ({**GOOD, "duration": "5"}, "invalid_duration"),
        ({**GOOD, "duration": 5.0}, "invalid_duration"),
        (
            {**GOOD, "mediaUrls": [f"https://c.example/{i}.png" for i in range(6)]},
            "invalid_media_urls",
        ),
        ({**GOOD, "mediaUrls": []}, "invalid_media_urls"),
        ({**GOOD, "mediaUrls": ["data:image/png;base64,AAAA"]}, "invalid_media_urls"),
        ({**GOOD, "mediaUrls": ["http://127.0.0.1:1/a.png"]}, "invalid_media_urls"),
        ({**GOOD, "mediaUrls": ["http://cdn.example/a.png"]}, "invalid_media_urls"),
        ({**GOOD, "metadata": "x"}, "invalid_request"),
        (["not", "an", "object"], "invalid_request"),
    ],
)
async def test_simulator_validation_envelope(body: Any, code: str) -> None:
    app = sim_app()
    async with serve(app) as url:
        status, payload = await call(f"{url}/api/open/v1/video/generations", body)
    assert status == 400
    assert payload["success"] is False
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert len(app[LEDGER]) == 0


def _media_server() -> web.Application:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    media = web.Application()
    media.router.add_get("/first.png", image)
    return media


async def test_loopback_media_allowed_when_enabled(tmp_path: Path) -> None:
    app = sim_app(allow_loopback_media=True)
    async with serve(_media_server()) as origin, adapter_for(app, tmp_path) as provider:
        media = [MediaRef(MediaRole.IMAGE, f"{origin}/first.png")]
        job = await provider.submit(make_shot(duration=5), media, key="k")
        assert job.credits == 64
        assert len(app[LEDGER]) == 1
        missing = [MediaRef(MediaRole.IMAGE, f"{origin}/gone.png")]
        with pytest.raises(Rejected, match="HTTP 404"):  # the service fetches media, as real
            await provider.submit(make_shot(duration=5), missing, key="k2")
    assert len(app[LEDGER]) == 1  # the refused submit was not charged


async def test_failed_prompt_is_reported_and_refunded(tmp_path: Path) -> None:
    app = sim_app()
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(prompt="a storm FAIL_ME"), [], key="k")
        final = (await until_terminal(provider, job))[-1]
    assert final.status is JobStatus.FAILED
    assert final.raw_status == "failed"
    assert final.message.startswith("content_policy:")
    assert final.result_url is None
    assert app[LEDGER].charges[0].refunded


async def test_cancel_queued_task_then_terminal_refusals(tmp_path: Path) -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=30))
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(), [], key="k")
        await provider.cancel(job)
        result = await provider.poll(job)
        assert (result.status, result.raw_status) == (JobStatus.CANCELLED, "cancelled")
        with pytest.raises(Rejected, match="cannot be cancelled: already cancelled") as info:
            await provider.cancel(job)
        assert info.value.status == 400
    assert app[LEDGER].charges[0].refunded


async def test_cancel_finished_task_is_rejected(tmp_path: Path) -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=0.05))
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(), [], key="k")
        await until_terminal(provider, job)
        with pytest.raises(Rejected, match="cannot be cancelled: already succeeded"):
            await provider.cancel(job)
    assert not app[LEDGER].charges[0].refunded


async def test_unknown_task(tmp_path: Path) -> None:
    app = sim_app()
    ghost = JobHandle("seedance2", "req_0000000000000000", "seedance-2.0", 0.0)
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises(JobFailed) as info:
            await provider.poll(ghost)
        assert info.value.status == 404
        with pytest.raises(Rejected):
            await provider.cancel(ghost)


async def test_injected_429_on_submit(tmp_path: Path) -> None:
    app = sim_app()
    app[FAULTS].add(Fault("submit", FaultKind.RATE_LIMIT, retry_after=2.0))
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises(RateLimited) as info:
            await provider.submit(make_shot(), [], key="k")
        assert info.value.retry_after == 2.0
        job = await provider.submit(make_shot(), [], key="k")  # the next one goes through
    assert [c.job_id for c in app[LEDGER].charges] == [job.job_id]


async def test_reset_before_submit_is_not_charged(tmp_path: Path) -> None:
    app = sim_app()
    app[FAULTS].add(Fault("submit", FaultKind.RESET_BEFORE))
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises((NotSent, Ambiguous)):
            await provider.submit(make_shot(), [], key="k")
    assert len(app[LEDGER]) == 0


@pytest.mark.parametrize("kind", [FaultKind.RESET_AFTER, FaultKind.SERVER_ERROR_AFTER])
async def test_lost_submit_answer_is_ambiguous_and_charged(tmp_path: Path, kind: FaultKind) -> None:
    app = sim_app()
    app[FAULTS].add(Fault("submit", kind))
    async with adapter_for(app, tmp_path) as provider:
        with pytest.raises(Ambiguous):
            await provider.submit(make_shot(), [], key="k")
    assert len(app[LEDGER]) == 1  # charged: this is why an ambiguous submit is never retried
    assert app[LEDGER].charges[0].key == "k"


async def test_poll_server_error_is_transient(tmp_path: Path) -> None:
    app = sim_app()
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(), [], key="k")
        app[FAULTS].add(Fault("poll", FaultKind.SERVER_ERROR))
        with pytest.raises(Ambiguous) as info:
            await provider.poll(job)
        assert info.value.status == 500
        assert (await provider.poll(job)).status in (JobStatus.QUEUED, JobStatus.RUNNING)


async def test_truncated_fetch_fails_the_stream(tmp_path: Path) -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=0.05))
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(), [], key="k")
        final = (await until_terminal(provider, job))[-1]
        full = await read_all(provider, job, final)
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE))
        got = bytearray()
        with pytest.raises(ProviderError):
            await collect(provider, job, final, got)
    assert 0 < len(got) < len(full)


async def test_expired_result_url(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=0.05, url_ttl_s=0.1)
    app = sim_app(config=config)
    async with adapter_for(app, tmp_path) as provider:
        job = await provider.submit(make_shot(), [], key="k")
        final = (await until_terminal(provider, job))[-1]
        app[FAULTS].add(Fault("fetch", FaultKind.EXPIRE))
        with pytest.raises(FetchError) as info:
            await read_all(provider, job, final)
        assert (info.value.expired, info.value.status) == (True, 410)
        await anyio.sleep(0.15)  # past url_ttl_s: the object is gone
        with pytest.raises(FetchError) as info:
            await read_all(provider, job, final)
        assert (info.value.expired, info.value.status) == (True, 404)
        with pytest.raises(FetchError, match=r"no output\.url"):
            await read_all(provider, job, PollResult(JobStatus.SUCCEEDED))


async def test_submits_per_minute_limit(tmp_path: Path) -> None:
    app = sim_app(submits_per_minute=1)
    async with adapter_for(app, tmp_path) as provider:
        await provider.submit(make_shot(), [], key="k1")
        with pytest.raises(RateLimited) as info:
            await provider.submit(make_shot(), [], key="k2")
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 60
    assert len(app[LEDGER]) == 1


async def test_insufficient_credits(tmp_path: Path) -> None:
    app = sim_app(credits_balance=40)
    async with adapter_for(app, tmp_path) as provider:
        await provider.submit(make_shot(duration=5), [], key="k1")  # 40 credits
        with pytest.raises(Rejected) as info:
            await provider.submit(make_shot(duration=5), [], key="k2")
    assert info.value.status == 402
    assert "insufficient_credits" in str(info.value)
    assert len(app[LEDGER]) == 1


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]], anyio.Event]]:
    received: list[dict[str, Any]] = []
    arrived = anyio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with serve(receiver) as url:
        yield f"{url}/hook", received, arrived


async def test_webhook_posts_final_task(tmp_path: Path) -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=0.1))
    async with (
        webhook_receiver() as (hook, received, arrived),
        adapter_for(app, tmp_path) as provider,
    ):
        job = await provider.submit(make_shot(extra={"webhookUrl": hook}), [], key="k")
        with anyio.fail_after(3):
            await arrived.wait()
    assert len(received) == 1
    assert received[0]["requestId"] == job.job_id
    result = answers.parse_status(received[0])
    assert result.status is JobStatus.SUCCEEDED
    assert result.result_url is not None
    assert app[sim.STATE].webhooks[0].status == 204


async def test_webhook_on_cancel(tmp_path: Path) -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=30))
    async with (
        webhook_receiver() as (hook, received, arrived),
        adapter_for(app, tmp_path) as provider,
    ):
        job = await provider.submit(make_shot(extra={"webhookUrl": hook}), [], key="k")
        await provider.cancel(job)
        with anyio.fail_after(3):
            await arrived.wait()
    assert [(r["requestId"], r["status"]) for r in received] == [(job.job_id, "cancelled")]


async def test_webhook_not_sent_to_remote_hosts() -> None:
    app = sim_app(config=SimConfig(api_key=KEY, latency_s=0.05))
    body = {**GOOD, "webhookUrl": "https://hooks.example.com/x"}
    state = app[sim.STATE]
    async with serve(app) as url:
        status, _ = await call(f"{url}/api/open/v1/video/generations", body)
        assert status == 200
        for _ in range(150):
            if state.webhooks:
                break
            await anyio.sleep(0.02)
    delivery = state.webhooks[0]
    assert (delivery.status, delivery.error) == (None, "not a loopback URL")
    assert delivery.payload["status"] == "succeeded"


async def test_models_endpoint_without_auth() -> None:
    app = sim_app()
    async with serve(app) as url:
        status, payload = await call(f"{url}/api/open/v1/models", key=None)
    assert status == 200
    assert payload["success"] is True
    by_id = {entry["id"]: entry for entry in payload["data"]}
    assert by_id["seedance-1.5-pro"]["durations"] == [5, 10]
    price = by_id["seedance-2.0"]["pricing"]
    assert price["creditsPerSecond"] * 5 == 40


def _fake_gateway(status: int, body: bytes) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/open/v1/video/generations", answer)
    return app


def _envelope(code: str) -> bytes:
    return json.dumps({"success": False, "error": {"code": code, "message": "m"}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, _envelope("invalid_request"), Rejected),
        (200, _envelope("unauthorized"), Rejected),
        (200, _envelope("mystery_glitch"), Ambiguous),
        (200, _envelope("rate_limited"), RateLimited),
        (200, b"<html>ok</html>", Ambiguous),
        (200, b'{"success": true, "status": "queued"}', Ambiguous),
        (201, b'{"status": "queued", "requestId": "req_1"}', Ambiguous),
        (400, _envelope("rate_limited"), RateLimited),
        (400, b"bad gateway config", Rejected),
        (503, b"upstream down", Ambiguous),
    ],
)
async def test_submit_answer_mapping(
    tmp_path: Path, status: int, body: bytes, error: type[ProviderError]
) -> None:
    async with (
        serve(_fake_gateway(status, body)) as url,
        Seedance2Provider(context(url, tmp_path)) as provider,
    ):
        with pytest.raises(error) as info:
            await provider.submit(make_shot(), [], key="k")
    assert type(info.value) is error
    assert KEY not in str(info.value)


async def test_closed_adapter_refuses_reuse(tmp_path: Path) -> None:
    provider = Seedance2Provider(context("https://www.seedance2.ink", tmp_path))
    await provider.aclose()
    await provider.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await provider.submit(make_shot(), [], key="k")
    job = JobHandle("seedance2", "req-1", "seedance-2.0", submitted_at=0.0)
    await assert_refuses_use(provider, make_shot(), job)


async def test_connection_refused_is_not_sent(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Seedance2Provider(context(f"http://127.0.0.1:{port}", tmp_path)) as provider:
        with pytest.raises(NotSent):
            await provider.submit(make_shot(), [], key="k")
