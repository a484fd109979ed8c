"""newapi adapter: codec on recorded bodies (newapi.md §3), adapter against the sim."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from PIL import Image

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
from pipeline.providers.base import INLINE, ProviderContext
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.http import ApiResponse
from pipeline.providers.newapi.adapter import (
    NewApiProvider,
    gateway_root,
    request_error,
)
from pipeline.providers.newapi.answers import (
    STATUSES,
    normalise_status,
    parse_error,
    parse_progress,
    parse_status,
    parse_submit,
)
from pipeline.providers.newapi.codec import MODELS, build_submit
from pipeline.providers.newapi.spec import SPEC, check
from pipeline.render.clips import probe
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig
from pipeline.sim.newapi.app import make_app
from pipeline.sim.newapi.tasks import QueryShape
from pipeline.transfer.upload import MediaResolver
from tests import provider_helpers
from tests.provider_helpers import (
    SUBMIT_FAULTS,
    assert_refuses_use,
    load_json,
    provider_context,
    served_adapter,
)

DATA = Path(__file__).parent / "data" / "newapi"
KEY = "sk-newapi-canary-0123456789"


def load(name: str) -> Any:
    return load_json("newapi", name)


def make_shot(model: str = "viduq3p-720p", **overrides: Any) -> Shot:
    return provider_helpers.make_shot("newapi", model, **({"duration": 2} | overrides))


# ----- codec: submit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "id_", "task_id"),
    [
        ("submit_ok.json", "task_abc", "task_abc"),
        ("submit_stock_object_video.json", "task_abc", "task_abc"),
        ("submit_id_only.json", "task_abc", None),
        ("submit_task_id_only.json", None, "task_abc"),
    ],
)
def test_parse_submit_accepts_id_and_or_task_id(
    name: str, id_: str | None, task_id: str | None
) -> None:
    answer = parse_submit(load(name))
    assert answer.job_id == "task_abc"
    assert (answer.id, answer.task_id) == (id_, task_id)
    assert answer.status == "queued"


@pytest.mark.parametrize("payload", [{"object": "video", "status": "queued"}, [], "ok", None])
def test_parse_submit_without_ids_is_a_malformed_answer(payload: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse_submit(payload)


# ----- codec: status ---------------------------------------------------------------------------

CDN = "https://cdn.vidu.example"


@pytest.mark.parametrize(
    ("name", "status", "progress", "url", "message"),
    [
        ("query_a_not_start.json", JobStatus.QUEUED, 0.0, None, ""),
        ("query_a_submitted.json", JobStatus.QUEUED, 0.0, None, ""),
        ("query_a_queued.json", JobStatus.QUEUED, 0.1, None, ""),
        ("query_a_in_progress.json", JobStatus.RUNNING, 0.3, None, ""),
        ("query_a_success.json", JobStatus.SUCCEEDED, 1.0, f"{CDN}/abc.mp4?sig=s3cr3t", ""),
        (
            "query_a_success_creations_only.json",
            JobStatus.SUCCEEDED,
            1.0,
            f"{CDN}/raw.mp4?sig=x",
            "",
        ),
        ("query_a_failure.json", JobStatus.FAILED, 1.0, None, "AuditSubmitIllegal"),
        ("query_a_unknown.json", JobStatus.RUNNING, None, None, ""),
        ("query_b_wrapped_processing.json", JobStatus.RUNNING, None, None, ""),
        (
            "query_b_wrapped_succeeded.json",
            JobStatus.SUCCEEDED,
            1.0,
            "https://cdn.example/b.mp4",
            "",
        ),
        ("query_b_wrapped_failed.json", JobStatus.FAILED, None, None, "upstream moderation"),
        ("query_b_bare_queued.json", JobStatus.QUEUED, None, None, ""),
        ("query_b_bare_in_progress.json", JobStatus.RUNNING, None, None, ""),
        (
            "query_b_bare_succeeded.json",
            JobStatus.SUCCEEDED,
            1.0,
            "https://cdn.example/bare.mp4",
            "",
        ),
        (
            "query_b_bare_completed.json",
            JobStatus.SUCCEEDED,
            1.0,
            "https://cdn.example/done.mp4",
            "",
        ),
        ("query_c_queued.json", JobStatus.QUEUED, 0.0, None, ""),
        ("query_c_in_progress.json", JobStatus.RUNNING, 0.45, None, ""),
        ("query_c_completed.json", JobStatus.SUCCEEDED, 1.0, f"{CDN}/c.mp4?sig=1", ""),
        (
            "query_c_failed.json",
            JobStatus.FAILED,
            1.0,
            None,
            "AuditSubmitIllegal (AuditSubmitIllegal)",
        ),
        ("query_c_unknown.json", JobStatus.RUNNING, 0.0, None, ""),
        ("query_video_url.json", JobStatus.SUCCEEDED, 1.0, "https://cdn.example/v.mp4", ""),
    ],
)
def test_parse_status_every_recorded_shape(
    name: str, status: JobStatus, progress: float | None, url: str | None, message: str
) -> None:
    result = parse_status(load(name))
    assert result.status == status
    assert result.progress == (pytest.approx(progress) if progress is not None else None)
    assert result.result_url == url
    assert result.message == message
    assert result.refunded is None
    assert result.raw_status  # the provider's own word is kept for display


@pytest.mark.parametrize(("raw", "expected"), sorted(STATUSES.items()))
def test_every_status_synonym_in_any_case(raw: str, expected: JobStatus) -> None:
    assert normalise_status(raw) == expected
    assert normalise_status(raw.upper()) == expected
    assert normalise_status(f" {raw.title()} ") == expected


@pytest.mark.parametrize("raw", ["UNKNOWN", "", "warming_up", "paused"])
def test_unknown_statuses_count_as_running(raw: str) -> None:
    assert normalise_status(raw) == JobStatus.RUNNING


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30%", 0.3),
        ("0%", 0.0),
        ("100%", 1.0),
        (" 45 % ", 0.45),
        (45, 0.45),
        ("7", 0.07),
        (150, 1.0),
        (-3, 0.0),
        (None, None),
        ("", None),
        ("n/a", None),
        (True, None),
    ],
)
def test_parse_progress(value: object, expected: float | None) -> None:
    got = parse_progress(value)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "payload", [load("error_task_not_exist.json"), {"code": "success", "data": None}, [1], "x"]
)
def test_parse_status_rejects_bodies_without_status(payload: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse_status(payload)


# ----- codec: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "kind", "message"),
    [
        ("error_task_not_exist.json", "task_not_exist", "task", "task_not_exist"),
        (
            "error_get_channel_failed.json",
            "get_channel_failed",
            "task",
            "model viduq3p-4k is temporarily unavailable",
        ),
        (
            "error_fail_to_fetch_task.json",
            "fail_to_fetch_task",
            "task",
            "upstream returned status 500",
        ),
        ("error_relay_401.json", "", "relay", "invalid token"),
        ("error_relay_404.json", "", "relay", "Invalid URL (GET /v1/video/generation)"),
        ("error_relay_501.json", "api_not_implemented", "relay", "API not implemented"),
    ],
)
def test_parse_error_recorded_bodies(name: str, code: str, kind: str, message: str) -> None:
    raw = (DATA / name).read_bytes()
    err = parse_error(raw)
    assert (err.code, err.kind, err.message) == (code, kind, message)
    assert parse_error(json.loads(raw)) == err


def test_parse_error_plain_text_and_odd_json() -> None:
    assert parse_error(b"<html>502 Bad Gateway</html>").message == "<html>502 Bad Gateway</html>"
    assert parse_error(b'{"message": "busy"}').message == "busy"
    assert parse_error(b'{"error": {"message": null, "code": 42}}').code == "42"


def _resp(status: int, name_or_body: str | dict[str, Any], **headers: str) -> ApiResponse:
    body = name_or_body if isinstance(name_or_body, dict) else load(name_or_body)
    return ApiResponse(status, headers, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("status", "body", "kind", "text"),
    [
        (401, "error_relay_401.json", Rejected, "NEWAPI_API_KEY"),
        (503, "error_get_channel_failed.json", Rejected, "temporarily unavailable"),
        (500, "error_fail_to_fetch_task.json", Rejected, "nothing was charged"),
        (400, {"code": "invalid_request", "message": "prompt is required"}, Rejected, "prompt"),
        (
            403,
            {"error": {"message": "user quota is not enough", "code": "insufficient_user_quota"}},
            Rejected,
            "top up",
        ),
        (
            500,
            {"error": {"message": "Internal server error", "code": "internal"}},
            Ambiguous,
            "500",
        ),
        (502, {"message": "bad gateway"}, Ambiguous, "bad gateway"),
        (501, "error_relay_501.json", Ambiguous, "api_not_implemented"),
    ],
)
def test_request_error_classification(
    status: int, body: Any, kind: type[ProviderError], text: str
) -> None:
    err = request_error(_resp(status, body), shot="s1")
    assert type(err) is kind
    assert text in str(err)
    assert err.status == status
    assert err.provider == "newapi"
    assert err.shot == "s1"


def test_request_error_429_carries_retry_after() -> None:
    err = request_error(_resp(429, "error_relay_401.json", **{"Retry-After": "7"}))
    assert isinstance(err, RateLimited)
    assert err.retry_after == 7.0


# ----- codec: requests, capabilities, checks ---------------------------------------------------


def test_build_submit_seed_gateway_body() -> None:
    shot = make_shot(audio=True, seed=7, extra={"bgm": True, "movement_amplitude": "large"})
    media = [
        MediaRef(MediaRole.IMAGE, "https://img.example/first.png"),
        MediaRef(MediaRole.END_IMAGE, "data:image/png;base64,AAAA"),
        MediaRef(MediaRole.REFERENCE_IMAGE, "https://img.example/r1.png"),
        MediaRef(MediaRole.REFERENCE_IMAGE, "https://img.example/r2.png"),
    ]
    assert build_submit(shot, media) == {
        "model": "viduq3p-720p",
        "prompt": shot.prompt,
        "duration": 2,
        "aspect_ratio": "16:9",
        "image": "https://img.example/first.png",
        "last_image": "data:image/png;base64,AAAA",
        "reference_image_urls": ["https://img.example/r1.png", "https://img.example/r2.png"],
        "extra_body": {"audio": True, "seed": 7, "bgm": True, "movement_amplitude": "large"},
    }


def test_build_submit_minimal_and_extra_overrides() -> None:
    body = build_submit(make_shot(extra={"audio": True}), [])
    assert body == {
        "model": "viduq3p-720p",
        "prompt": make_shot().prompt,
        "duration": 2,
        "aspect_ratio": "16:9",
        "extra_body": {"audio": True},
    }


@pytest.mark.parametrize("role", [MediaRole.REFERENCE_VIDEO, MediaRole.REFERENCE_AUDIO])
def test_build_submit_rejects_non_images(role: MediaRole) -> None:
    with pytest.raises(Rejected, match="images only"):
        build_submit(make_shot(), [MediaRef(role, "https://x.example/a")])


def test_capability_table() -> None:
    for res in ("540p", "720p", "1080p"):
        for family in ("viduq3p", "viduq3t"):
            caps = MODELS[f"{family}-{res}"]
            assert caps.resolutions == (res,)
            assert caps.durations == tuple(range(1, 17))
            assert caps.max_prompt_chars == 2000
            assert caps.max_reference_images == 7
            assert caps.end_frame
            assert caps.audio
            assert caps.first_frame
        assert f"viduq3p-{res}-offpeak" in MODELS
    assert "4:3" in MODELS["viduq3p-720p"].aspect_ratios
    assert MODELS["viduq3t-720p"].aspect_ratios == ("16:9", "9:16", "1:1")
    assert MODELS["viduq3p-mix-720p"].resolutions == ("720p",)
    assert SPEC.default_model in SPEC.models
    assert SPEC.defaults.base_url is None
    assert SPEC.defaults.api_key_env == "NEWAPI_API_KEY"
    assert SPEC.media.data_urls
    assert SPEC.needs_api_key


def test_check_resolution_is_set_by_the_model_id() -> None:
    shot = make_shot(resolution="1080p")
    assert check(shot, MODELS[shot.model]) == [
        ("resolution", "resolution is set by the model id: use viduq3p-1080p for 1080p")
    ]
    mix = make_shot(model="viduq3p-mix-720p", resolution="540p")
    ((field, message),) = check(mix, MODELS[mix.model])
    assert field == "resolution"
    assert "viduq3p-540p" in message
    assert check(make_shot(resolution="720p"), MODELS["viduq3p-720p"]) == []
    assert check(make_shot(), MODELS["viduq3p-720p"]) == []


def test_check_offpeak_needs_audio_and_end_frame_needs_first() -> None:
    offpeak = make_shot(model="viduq3p-720p-offpeak", audio=False)
    assert [f for f, _ in check(offpeak, MODELS[offpeak.model])] == ["audio"]
    unset = make_shot(model="viduq3p-720p-offpeak")  # the gateway's default: as documented
    assert unset.audio is None
    assert check(unset, MODELS[unset.model]) == []
    ok = make_shot(model="viduq3p-720p-offpeak", audio=True)
    assert check(ok, MODELS[ok.model]) == []
    end_only = make_shot(end_image=Asset(MediaRole.END_IMAGE, url="https://x.example/e.png"))
    assert [f for f, _ in check(end_only, MODELS[end_only.model])] == ["end_image"]


def test_factory_requires_base_url(tmp_path: Path) -> None:
    ctx = ProviderContext(name="newapi", settings=SPEC.defaults, run_dir=tmp_path, api_key=KEY)
    with pytest.raises(Rejected, match=r"providers\.newapi\.base_url is not set"):
        SPEC.factory(ctx)


@pytest.mark.parametrize(
    ("base", "root"),
    [
        ("https://gw.example", "https://gw.example"),
        ("https://gw.example/", "https://gw.example"),
        ("https://gw.example/v1", "https://gw.example"),
        ("https://gw.example/proxy/v1/", "https://gw.example/proxy"),
    ],
)
def test_gateway_root(base: str, root: str) -> None:
    assert gateway_root(base) == root


# ----- adapter against the simulator -----------------------------------------------------------


@asynccontextmanager
async def gateway(
    tmp_path: Path,
    *,
    config: SimConfig | None = None,
    key: str = KEY,
    query_shape: QueryShape = "A",
    not_exist_for_s: float = 0.0,
    quota_jobs: int | None = None,
) -> AsyncIterator[tuple[web.Application, NewApiProvider, str]]:
    app = make_app(
        config or SimConfig(api_key=KEY, latency_s=0.2),
        query_shape=query_shape,
        not_exist_for_s=not_exist_for_s,
        quota_jobs=quota_jobs,
    )
    async with served_adapter(SPEC, NewApiProvider, app, tmp_path, key=key) as (provider, url):
        yield app, provider, url


async def poll_until_done(provider: NewApiProvider, job: JobHandle) -> list[PollResult]:
    seen: list[PollResult] = []
    for _ in range(100):
        result = await provider.poll(job)
        seen.append(result)
        if result.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return seen
        await anyio.sleep(0.02)
    raise AssertionError(f"job never finished: {seen[-1]}")


async def read_all(provider: NewApiProvider, job: JobHandle, result: PollResult) -> bytes:
    async with provider.fetch(job, result) as download:
        return b"".join([chunk async for chunk in download.chunks])


async def test_happy_path_submit_poll_fetch(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        before = time.time()
        job = await provider.submit(make_shot(), [], key="run:harbor-s01:1")
        assert job.job_id.startswith("task_")
        assert job.model == "viduq3p-720p"
        assert dict(job.data) == {"id": job.job_id, "task_id": job.job_id}
        assert before <= job.submitted_at <= time.time()
        seen = await poll_until_done(provider, job)
        final = seen[-1]
        assert final.status == JobStatus.SUCCEEDED
        assert final.raw_status == "SUCCESS"
        assert final.progress == 1.0
        assert final.result_url
        assert "/cdn/vidu/" in final.result_url
        assert {r.raw_status for r in seen} <= {
            "NOT_START",
            "SUBMITTED",
            "QUEUED",
            "IN_PROGRESS",
            "SUCCESS",
        }
        data = await read_all(provider, job, final)
        assert data[4:8] == b"ftyp"
        out = tmp_path / "out.mp4"
        out.write_bytes(data)
        assert probe(out).duration_s == pytest.approx(2.0, abs=0.5)
        charges = app[LEDGER].charges
        assert len(charges) == 1
        assert charges[0].job_id == job.job_id
        assert not charges[0].refunded
        assert app[FAULTS].hits.get("content") is None  # fetched from the URL, not the proxy


@pytest.mark.parametrize(("shape", "done"), [("B", "succeeded"), ("C", "completed")])
async def test_other_query_shapes(tmp_path: Path, shape: QueryShape, done: str) -> None:
    async with gateway(tmp_path, query_shape=shape) as (app, provider, _):
        job = await provider.submit(make_shot(aspect_ratio="9:16"), [], key="k")
        final = (await poll_until_done(provider, job))[-1]
        assert (final.status, final.raw_status) == (JobStatus.SUCCEEDED, done)
        data = await read_all(provider, job, final)
        assert data[4:8] == b"ftyp"
        assert len(app[LEDGER]) == 1


async def test_submit_answer_has_documented_fields_and_ratios_header(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (_, _, url), aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KEY}"}
        body = {"model": "viduq3p-1080p", "prompt": "a gull", "duration": 4}
        async with session.post(f"{url}/v1/video/generations", json=body, headers=headers) as r:
            answer = await r.json()
            ratios = json.loads(r.headers["X-New-Api-Other-Ratios"])
        assert answer["object"] == "video.generation.job"
        assert answer["status"] == "queued"
        assert answer["id"] == answer["task_id"]
        assert answer["progress"] == 0
        assert ratios == {"seconds": 0.8, "resolution": 2.0}
        task = answer["id"]
        async with session.get(f"{url}/v1/videos/{task}", headers=headers) as r:
            video = await r.json()
        assert video["object"] == "video"
        assert video["status"] in ("queued", "in_progress")
        async with session.get(f"{url}/v1/models", headers=headers) as r:
            listed = await r.json()
        assert {m["id"] for m in listed["data"]} == set(MODELS)
        async with session.get(f"{url}/v1/video/generation", headers=headers) as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "Invalid URL (GET /v1/video/generation)"


async def test_wrong_key_is_rejected_without_leaking_it(tmp_path: Path) -> None:
    async with gateway(tmp_path, key="sk-wrong-secret-value") as (app, provider, _):
        with pytest.raises(Rejected) as info:
            await provider.submit(make_shot(), [], key="k")
        assert info.value.status == 401
        assert "sk-wrong-secret-value" not in str(info.value)
        assert "invalid token" in str(info.value)
        assert len(app[LEDGER]) == 0


async def test_unknown_model_is_get_channel_failed_and_not_charged(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        with pytest.raises(Rejected, match="temporarily unavailable") as info:
            await provider.submit(make_shot(model="viduq9-8k"), [], key="k")
        assert info.value.status == 503
        assert len(app[LEDGER]) == 0


@pytest.mark.parametrize(
    ("shot", "text"),
    [
        (make_shot(duration=17), "duration 17"),
        (make_shot(prompt="x" * 2001), "above 2000"),
        (make_shot(prompt="   "), "prompt is required"),
        (make_shot(model="viduq3t-720p", aspect_ratio="4:3"), "aspect_ratio"),
        (make_shot(model="viduq3p-720p-offpeak", audio=False), "audio is off"),
        (make_shot(extra={"seed": "seven"}), "extra_body.seed"),
        (make_shot(extra={"seed": False}), "extra_body.seed"),
        (make_shot(extra={"bgm": "yes"}), "extra_body.bgm"),
    ],
)
async def test_validation_errors_are_rejected(tmp_path: Path, shot: Shot, text: str) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        with pytest.raises(Rejected, match=text) as info:
            await provider.submit(shot, [], key="k")
        assert info.value.status == 400
        assert len(app[LEDGER]) == 0


async def test_too_many_references_and_end_frame_without_first(tmp_path: Path) -> None:
    refs = [MediaRef(MediaRole.REFERENCE_IMAGE, f"https://img.example/{i}.png") for i in range(8)]
    async with gateway(tmp_path) as (app, provider, _):
        with pytest.raises(Rejected, match="too many reference images"):
            await provider.submit(make_shot(), refs, key="k")
        end = [MediaRef(MediaRole.END_IMAGE, "https://img.example/end.png")]
        with pytest.raises(Rejected, match="last_image requires image"):
            await provider.submit(make_shot(), end, key="k")
        assert len(app[LEDGER]) == 0


async def test_insufficient_quota_says_top_up(tmp_path: Path) -> None:
    async with gateway(tmp_path, quota_jobs=1) as (app, provider, _):
        await provider.submit(make_shot(), [], key="k1")
        with pytest.raises(Rejected, match="top up") as info:
            await provider.submit(make_shot(), [], key="k2")
        assert info.value.status == 403
        assert len(app[LEDGER]) == 1


async def test_failed_prompt_reports_reason_and_gateway_refunds(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        job = await provider.submit(make_shot(prompt="a storm FAIL_ME"), [], key="k")
        final = (await poll_until_done(provider, job))[-1]
        assert final.status == JobStatus.FAILED
        assert final.raw_status == "FAILURE"
        assert final.message == "AuditSubmitIllegal"
        assert final.refunded is None  # the answer does not say so [inferred]
        assert app[LEDGER].charges[0].refunded  # but the gateway did refund


async def test_task_not_exist_is_transient_right_after_submit(tmp_path: Path) -> None:
    async with gateway(tmp_path, not_exist_for_s=0.4) as (_, provider, _):
        job = await provider.submit(make_shot(), [], key="k")
        with pytest.raises(Ambiguous, match="not visible yet") as info:
            await provider.poll(job)
        assert info.value.status == 400
        final = (await poll_until_done_tolerant(provider, job))[-1]
        assert final.status == JobStatus.SUCCEEDED


async def poll_until_done_tolerant(provider: NewApiProvider, job: JobHandle) -> list[PollResult]:
    for _ in range(100):
        try:
            return await poll_until_done(provider, job)
        except Ambiguous:
            await anyio.sleep(0.02)
    raise AssertionError("task never became visible")


async def test_task_not_exist_long_after_submit_is_job_failed(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (_, provider, _):
        old = JobHandle("newapi", "task_gone", "viduq3p-720p", submitted_at=time.time() - 120)
        with pytest.raises(JobFailed, match="does not know task task_gone") as info:
            await provider.poll(old)
        assert info.value.refunded is None


async def test_poll_faults(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        job = await provider.submit(make_shot(), [], key="k")
        app[FAULTS].add(Fault("poll", FaultKind.RATE_LIMIT, retry_after=3))
        with pytest.raises(RateLimited) as info:
            await provider.poll(job)
        assert info.value.retry_after == 3.0
        app[FAULTS].add(Fault("poll", FaultKind.SERVER_ERROR))
        with pytest.raises(Ambiguous):
            await provider.poll(job)
        app[FAULTS].add(Fault("poll", FaultKind.TRUNCATE))
        with pytest.raises(Ambiguous):
            await provider.poll(job)
        assert (await provider.poll(job)).status in (JobStatus.QUEUED, JobStatus.RUNNING)


# ----- submit faults: money safety -------------------------------------------------------------


async def test_submit_429_is_rate_limited_and_not_charged(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        app[FAULTS].add(Fault("submit", FaultKind.RATE_LIMIT, retry_after=7))
        with pytest.raises(RateLimited) as info:
            await provider.submit(make_shot(), [], key="k")
        assert info.value.retry_after == 7.0
        assert len(app[LEDGER]) == 0


@pytest.mark.parametrize(("kind", "charged"), SUBMIT_FAULTS)
async def test_submit_faults_are_ambiguous(tmp_path: Path, kind: FaultKind, charged: int) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        app[FAULTS].add(Fault("submit", kind))
        with pytest.raises((Ambiguous, NotSent)) as info:
            await provider.submit(make_shot(), [], key="k")
        if charged:  # the job exists: only Ambiguous keeps the runner from paying twice
            assert isinstance(info.value, Ambiguous)
        assert len(app[LEDGER]) == charged


async def test_submit_connection_refused_is_not_sent(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = provider_context(SPEC, f"http://127.0.0.1:{port}", tmp_path, key=KEY, simulate=False)
    async with NewApiProvider(ctx) as provider:
        with pytest.raises(NotSent):
            await provider.submit(make_shot(), [], key="k")


# ----- fetch ----------------------------------------------------------------------------------


async def _finished(provider: NewApiProvider) -> tuple[JobHandle, PollResult]:
    job = await provider.submit(make_shot(duration=1), [], key="k")
    return job, (await poll_until_done(provider, job))[-1]


async def test_truncated_result_fails_the_stream(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        job, final = await _finished(provider)
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE))
        with pytest.raises(ProviderError):
            await read_all(provider, job, final)
        assert (await read_all(provider, job, final))[4:8] == b"ftyp"


async def test_expired_url_falls_back_to_the_gateway_proxy(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=0.1, url_ttl_s=0.01)
    async with gateway(tmp_path, config=config) as (app, provider, _):
        job, final = await _finished(provider)
        await anyio.sleep(0.05)
        data = await read_all(provider, job, final)
        assert data[4:8] == b"ftyp"
        assert app[FAULTS].hits["fetch"] == 1
        assert app[FAULTS].hits["content"] == 1


async def test_expired_url_and_no_proxy_is_fetch_error_expired(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=0.1, url_ttl_s=0.01)
    async with gateway(tmp_path, config=config) as (app, provider, _):
        job, final = await _finished(provider)
        await anyio.sleep(0.05)
        app[FAULTS].add(Fault("content", FaultKind.EXPIRE))
        with pytest.raises(FetchError) as info:
            await read_all(provider, job, final)
        assert info.value.expired
        assert info.value.status == 403
        assert "sig=" not in str(info.value)


async def test_fetch_without_url_uses_the_proxy(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        job, _ = await _finished(provider)
        data = await read_all(provider, job, PollResult(JobStatus.SUCCEEDED))
        assert data[4:8] == b"ftyp"
        assert app[FAULTS].hits.get("fetch") is None


async def test_proxy_of_an_unfinished_task_is_fetch_error(tmp_path: Path) -> None:
    async with gateway(tmp_path, config=SimConfig(api_key=KEY, latency_s=5)) as (_, provider, _):
        job = await provider.submit(make_shot(), [], key="k")
        with pytest.raises(FetchError) as info:
            await read_all(provider, job, PollResult(JobStatus.SUCCEEDED))
        assert info.value.status == 404


# ----- media ----------------------------------------------------------------------------------


def _png(path: Path) -> Path:
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path, format="PNG")
    return path


async def test_local_image_becomes_a_data_url_the_gateway_accepts(tmp_path: Path) -> None:
    png = _png(tmp_path / "first.png")
    resolver = MediaResolver()
    asset = Asset(MediaRole.IMAGE, path=png, sha256="a1", mime="image/png")
    async with gateway(tmp_path) as (app, provider, _):
        ref = await resolver.resolve(asset, INLINE)
        assert ref.url.startswith("data:image/png;base64,")
        assert base64.b64decode(ref.url.split(",", 1)[1]) == png.read_bytes()
        remote = MediaRef(MediaRole.END_IMAGE, "https://img.example/end.png")
        job = await provider.submit(make_shot(), [ref, remote], key="k")
        assert job.job_id
        assert len(app[LEDGER]) == 1


def test_check_refuses_image_types_vidu_cannot_read() -> None:
    caps = SPEC.models["viduq3p-720p"]
    assert SPEC.check is not None
    gif = Asset(MediaRole.IMAGE, path=Path("/x.gif"), mime="image/gif")
    assert [f for f, _ in SPEC.check(make_shot(image=gif), caps)] == ["image"]
    png = Asset(MediaRole.IMAGE, path=Path("/x.png"), mime="image/png")
    assert SPEC.check(make_shot(image=png), caps) == []


async def test_closed_adapter_refuses_calls(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (app, provider, _):
        await provider.aclose()
        await provider.aclose()  # idempotent
        job = JobHandle("newapi", "task_x", "viduq3p-720p", submitted_at=time.time())
        await assert_refuses_use(provider, make_shot(), job)
        assert len(app[LEDGER]) == 0
