"""RelayDance: codec on recorded bodies (relaydance.md §4, newapi.md §3.3), adapter against the sim.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import dataclasses
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

from pipeline.errors import Ambiguous, FetchError, JobFailed, NotSent, RateLimited, Rejected
from pipeline.models import Asset, JobHandle, JobStatus, MediaRef, MediaRole, PollResult, Shot
from pipeline.providers.base import INLINE
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.relaydance.adapter import RelayDanceProvider
from pipeline.providers.relaydance.codec import (
    STATUS_SYNONYMS,
    build_submit,
    normalise_status,
    parse_error,
    parse_status,
    parse_submit,
)
from pipeline.providers.relaydance.spec import SPEC
from pipeline.render.clips import probe
from pipeline.settings import Price
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig, serve
from pipeline.sim.relaydance.app import BASE_PATH, STATE, make_app
from pipeline.transfer.upload import MediaResolver
from tests.provider_helpers import (
    SUBMIT_FAULTS,
    assert_refuses_use,
    load_json,
    make_shot,
    provider_context,
    served_adapter,
)

DATA = Path(__file__).parent / "data" / "relaydance"
KEY = "sk-relay-CANARY-0123456789abcdef"
SHOT = make_shot(
    "relaydance",
    "doubao-seedance-2-0-720p",
    prompt="Wide shot at dawn: a fisherwoman mends a net on the pier",
)
DONE = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def shot(**changes: Any) -> Shot:
    return dataclasses.replace(SHOT, **changes)


def recorded(name: str) -> Any:
    return load_json("relaydance", name)


# ----- codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), sorted(STATUS_SYNONYMS.items()))
def test_every_status_synonym_normalises_case_insensitively(raw: str, expected: JobStatus) -> None:
    assert normalise_status(raw) == expected
    assert normalise_status(raw.upper()) == expected
    assert normalise_status(f" {raw.title()} ") == expected


@pytest.mark.parametrize("raw", ["UNKNOWN", "", "warming_up"])
def test_unknown_statuses_count_as_running(raw: str) -> None:
    assert normalise_status(raw) == JobStatus.RUNNING
    assert parse_status({"task_id": "t", "status": raw}).status == JobStatus.RUNNING


@pytest.mark.parametrize(
    ("name", "status", "url", "progress", "message", "refunded"),
    [
        (
            "query_doc_succeeded.json",
            JobStatus.SUCCEEDED,
            "https://cdn.example.com/out/task_abc123.mp4?X-Tos-Signature=abc",
            None,
            "",
            None,
        ),
        ("query_doc_running.json", JobStatus.RUNNING, None, None, "", None),
        ("query_newapi_task_in_progress.json", JobStatus.RUNNING, None, 0.3, "", None),
        (
            "query_newapi_task_success.json",
            JobStatus.SUCCEEDED,
            "https://cdn.example.com/vidu/c1.mp4",
            1.0,
            "",
            None,
        ),
        ("query_newapi_task_failure.json", JobStatus.FAILED, None, 1.0, "CreditInsufficient", True),
        (
            "query_newapi_b_succeeded.json",
            JobStatus.SUCCEEDED,
            "https://cdn.example.com/veo/abc.mp4",
            None,
            "",
            None,
        ),
        ("query_newapi_b_processing.json", JobStatus.RUNNING, None, None, "", None),
        (
            "query_openai_video_completed.json",
            JobStatus.SUCCEEDED,
            "https://cdn.example.com/abc.mp4",
            1.0,
            "",
            None,
        ),
        (
            "query_openai_video_failed.json",
            JobStatus.FAILED,
            None,
            1.0,
            "OutputVideoSensitiveContentDetected",
            True,
        ),
        ("query_openai_video_queued.json", JobStatus.QUEUED, None, 0.0, "", None),
    ],
)
def test_parse_status_on_recorded_shapes(
    name: str,
    status: JobStatus,
    url: str | None,
    progress: float | None,
    message: str,
    refunded: bool | None,
) -> None:
    result = parse_status(recorded(name))
    assert result.status == status
    assert result.result_url == url
    assert result.progress == (pytest.approx(progress) if progress is not None else None)
    assert result.message == message
    assert result.refunded is refunded
    assert result.raw_status


def test_failure_reason_order_error_then_fail_reason_then_message() -> None:
    both = {"status": "failed", "error": {"message": "A"}, "fail_reason": "B", "message": "C"}
    assert parse_status(both).message == "A"
    assert parse_status({**both, "error": None}).message == "B"
    assert parse_status({**both, "error": None, "fail_reason": ""}).message == "C"


@pytest.mark.parametrize("payload", [[], "succeeded", {"task_id": "t"}, {"status": 3}, None])
def test_parse_status_refuses_non_task_payloads(payload: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse_status(payload)


def test_parse_submit() -> None:
    assert parse_submit(recorded("submit_response.json")) == "task_abc123"
    assert parse_submit({"id": "task_x", "status": "queued"}) == "task_x"
    bad: Any
    for bad in ({"status": "submitted"}, [], "task_abc", {"task_id": ""}):
        with pytest.raises(MalformedAnswer):
            parse_submit(bad)


def test_build_submit_matches_the_documented_request() -> None:
    s = shot(
        model="doubao-seedance-2-0-1080p",
        prompt="@image1 walks along the pier at dawn, camera follows",
        resolution="1080p",
        audio=True,
        extra={"callback_url": "https://example.com/hook"},
    )
    ref = MediaRef(MediaRole.REFERENCE_IMAGE, "https://example.com/mara.png")
    assert build_submit(s, [ref]) == recorded("submit_request.json")


def test_build_submit_roles_strings_and_metadata_only_extras() -> None:
    media = [
        MediaRef(MediaRole.IMAGE, "data:image/png;base64,AAAA"),
        MediaRef(MediaRole.END_IMAGE, "https://x/last.png"),
        MediaRef(MediaRole.REFERENCE_VIDEO, "https://x/ref.mp4"),
        MediaRef(MediaRole.REFERENCE_AUDIO, "https://x/ref.mp3"),
    ]
    extra = {"callback_url": "https://h/cb", "ratio": "1:1", "watermark": False}
    body = build_submit(shot(duration=10, seed=7, extra=extra), media)
    assert set(body) == {"model", "prompt", "seconds", "metadata"}
    assert body["seconds"] == "10"
    assert body["prompt"] == SHOT.prompt
    meta = body["metadata"]
    assert meta["ratio"] == "16:9"  # shot fields win over extra
    assert meta["resolution"] == "720p"  # baked into the model id
    assert "generate_audio" not in meta  # audio unset: the provider's default applies
    assert meta["seed"] == 7
    assert meta["callback_url"] == "https://h/cb"
    assert meta["watermark"] is False
    assert [(c["type"], c["role"]) for c in meta["content"]] == [
        ("image_url", "first_frame"),
        ("image_url", "last_frame"),
        ("video_url", "reference_video"),
        ("audio_url", "reference_audio"),
    ]
    assert meta["content"][2]["video_url"] == {"url": "https://x/ref.mp4"}
    plain = build_submit(shot(model="seedance-1-5-pro-no-audio"), [])["metadata"]
    assert "generate_audio" not in plain
    assert "content" not in plain
    assert "resolution" not in plain


def test_parse_error_bodies() -> None:
    auth = parse_error((DATA / "error_auth.json").read_bytes())
    assert auth.message == "The API key provided is invalid or has been revoked."
    assert auth.type == "authentication_error"
    gone = parse_error((DATA / "error_task_not_exist.json").read_bytes())
    assert (gone.code, gone.message) == ("task_not_exist", "task_not_exist")
    busy = parse_error((DATA / "error_model_unavailable.json").read_bytes())
    assert busy.code == "get_channel_failed"
    assert "temporarily unavailable" in busy.message
    assert parse_error((DATA / "error_invalid_url.json").read_bytes()).message.startswith(
        "Invalid URL"
    )
    assert parse_error(b"<html>502 Bad Gateway</html>").message == "<html>502 Bad Gateway</html>"


def test_check_rules_modelcaps_cannot_express(tmp_path: Path) -> None:
    assert SPEC.check is not None
    caps = SPEC.models[SHOT.model]
    assert SPEC.check(SHOT, caps) == []
    ref = Asset(MediaRole.REFERENCE_IMAGE, url="https://x/r.png")
    frame = Asset(MediaRole.IMAGE, url="https://x/f.png")
    fields = [f for f, _ in SPEC.check(shot(references=(ref,), image=frame), caps)]
    assert fields == ["references"]
    wrong_res = SPEC.check(shot(resolution="1080p"), caps)
    assert [f for f, _ in wrong_res] == ["resolution"]
    assert SPEC.check(shot(model="seedance-1-5-pro-no-audio", resolution="1080p"), caps) == []
    local_video = Asset(MediaRole.REFERENCE_VIDEO, path=tmp_path / "v.mp4")
    assert SPEC.check(shot(references=(local_video,)), caps) == []  # uploaded, then a URL
    assert [f for f, _ in SPEC.check(shot(extra={"content": []}), caps)] == ["extra"]
    cites = SPEC.check(shot(prompt="@image1 meets @image2", references=(ref,)), caps)
    assert [f for f, _ in cites] == ["prompt"]


def test_spec_defaults() -> None:
    assert SPEC.defaults.base_url == "https://relaydance.com/v1"
    assert SPEC.defaults.api_key_env == "RELAYDANCE_API_KEY"
    assert SPEC.needs_api_key
    assert SPEC.media.data_urls
    assert SPEC.media.inline_kinds == ("image",)
    assert set(SPEC.models) == {
        "doubao-seedance-2-0-720p",
        "doubao-seedance-2-0-1080p",
        "doubao-seedance-2-0-fast-260128",
        "seedance-1-5-pro-with-audio",
        "seedance-1-5-pro-no-audio",
    }
    for caps in SPEC.models.values():
        assert max(caps.durations) <= 15
        assert caps.max_reference_images == 9


# ----- adapter against the simulator -------------------------------------------------------------


@asynccontextmanager
async def running(
    tmp_path: Path,
    config: SimConfig | None = None,
    *,
    api_key: str = KEY,
    **options: Any,
) -> AsyncIterator[tuple[web.Application, RelayDanceProvider, str]]:
    app = make_app(config or SimConfig(api_key=KEY, latency_s=0.2), **options)
    async with served_adapter(SPEC, RelayDanceProvider, app, tmp_path, key=api_key) as served:
        provider, url = served
        yield app, provider, url


async def finish(
    provider: RelayDanceProvider, job: JobHandle, seen: list[str] | None = None
) -> PollResult:
    deadline = time.monotonic() + 4.0
    while True:
        result = await provider.poll(job)
        if seen is not None:
            seen.append(result.raw_status)
        if result.status in DONE:
            return result
        assert time.monotonic() < deadline, f"still {result.raw_status}"
        await anyio.sleep(0.03)


async def read_all(provider: RelayDanceProvider, job: JobHandle, result: PollResult) -> bytes:
    async with provider.fetch(job, result) as download:
        return b"".join([chunk async for chunk in download.chunks])


@pytest.mark.parametrize("shape", ["doc", "task", "video"])
async def test_happy_path_submit_poll_fetch(tmp_path: Path, shape: str) -> None:
    async with running(tmp_path, query_shape=shape) as (app, provider, _):
        before = time.time()
        job = await provider.submit(shot(), [], key="run:harbor-s01:1")
        assert job.job_id.startswith("task_")
        assert job.provider == "relaydance"
        assert job.model == SHOT.model
        assert before <= job.submitted_at <= time.time()
        result = await finish(provider, job)
        assert result.status == JobStatus.SUCCEEDED
        assert result.result_url is not None
        assert "/files/" in result.result_url
        data = await read_all(provider, job, result)
    assert data[4:8] == b"ftyp"
    out = tmp_path / "out.mp4"
    out.write_bytes(data)
    assert probe(out).duration_s == pytest.approx(5, abs=0.5)
    assert len(app[LEDGER]) == 1
    charge = app[LEDGER].charges[0]
    assert (charge.job_id, charge.refunded) == (job.job_id, False)
    assert charge.cost_usd == pytest.approx(0.4)
    assert app[FAULTS].hits.get("fetch") == 1
    assert "content" not in app[FAULTS].hits


async def test_statuses_follow_the_documented_progression(tmp_path: Path) -> None:
    async with running(tmp_path, SimConfig(api_key=KEY, latency_s=0.8)) as (_, provider, _):
        job = await provider.submit(shot(), [], key="k")
        seen: list[str] = []
        await finish(provider, job, seen)
    order = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert order == ["submitted", "running", "succeeded"]


async def test_known_price_becomes_cost_usd(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, provider, _):
        provider.settings = provider.settings.model_copy(
            update={"prices": {SHOT.model: Price(per_second_usd=0.1)}}
        )
        job = await provider.submit(shot(), [], key="k")
    assert job.cost_usd == pytest.approx(0.5)


async def test_wrong_key_is_rejected_without_leaking_it(tmp_path: Path) -> None:
    wrong = "sk-WRONG-canary-42"
    async with running(tmp_path, api_key=wrong) as (app, provider, _):
        with pytest.raises(Rejected) as info:
            await provider.submit(shot(), [], key="k")
    assert info.value.status == 401
    assert "invalid or has been revoked" in str(info.value)
    assert wrong not in str(info.value)
    assert len(app[LEDGER]) == 0


@pytest.mark.parametrize(
    ("changes", "status", "text"),
    [
        ({"model": "veo-9"}, 404, "veo-9"),
        ({"duration": 16}, 400, "seconds"),
        ({"aspect_ratio": "2:3"}, 400, "ratio"),
        ({"resolution": "1080p"}, 400, "resolution"),
        ({"prompt": "   "}, 400, "prompt"),
    ],
)
async def test_invalid_requests_are_rejected_and_not_charged(
    tmp_path: Path, changes: dict[str, Any], status: int, text: str
) -> None:
    async with running(tmp_path) as (app, provider, _):
        with pytest.raises(Rejected) as info:
            await provider.submit(shot(**changes), [], key="k")
    assert info.value.status == status
    assert text in str(info.value)
    assert len(app[LEDGER]) == 0


async def test_reference_limits_and_exclusive_frames(tmp_path: Path) -> None:
    images = [MediaRef(MediaRole.REFERENCE_IMAGE, f"https://x/{i}.png") for i in range(10)]
    frame = MediaRef(MediaRole.IMAGE, "https://x/f.png")
    async with running(tmp_path) as (app, provider, _):
        with pytest.raises(Rejected, match="too many image_url"):
            await provider.submit(shot(), images, key="k")
        with pytest.raises(Rejected, match="first/last frames"):
            await provider.submit(shot(), [frame, images[0]], key="k")
        job = await provider.submit(shot(), images[:9], key="k")
    assert [c.job_id for c in app[LEDGER].charges] == [job.job_id]


async def test_raw_wire_rules(tmp_path: Path) -> None:
    good = {"model": SHOT.model, "prompt": "p", "seconds": "5"}
    async with running(tmp_path) as (app, _, url), aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KEY}"}
        endpoint = url + BASE_PATH + "/video/generations"
        cases = [
            ({**good, "callback_url": "http://127.0.0.1/x"}, "must be inside metadata"),
            ({**good, "seconds": 5}, "must be a string"),
            ({**good, "metadata": {"generate_audio": "yes"}}, "boolean"),
            ({**good, "metadata": {"content": [{"type": "image_url", "role": "x"}]}}, "needs"),
        ]
        for body, text in cases:
            async with session.post(endpoint, json=body, headers=headers) as resp:
                assert resp.status == 400
                payload = await resp.json()
                assert text in payload["error"]["message"]
                assert payload["error"]["type"] == "invalid_request_error"
        async with session.get(url + BASE_PATH + "/models", headers=headers) as resp:
            listed = [m["id"] for m in (await resp.json())["data"]]
        async with session.get(url + BASE_PATH + "/models") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
    assert listed == list(SPEC.models)
    assert len(app[LEDGER]) == 0


async def test_insufficient_balance_is_403_rejected(tmp_path: Path) -> None:
    async with running(tmp_path, balance_usd=0.5) as (app, provider, _):
        await provider.submit(shot(), [], key="k1")  # 5 s x 0.08 = 0.40
        with pytest.raises(Rejected) as info:
            await provider.submit(shot(), [], key="k2")
    assert info.value.status == 403
    assert "insufficient balance, or model doubao-seedance-2-0-720p is not allowed" in str(
        info.value
    )
    assert len(app[LEDGER]) == 1
    assert app[STATE].balance_usd == pytest.approx(0.1)


async def test_model_not_allowed_for_key_is_403(tmp_path: Path) -> None:
    allowed = ["seedance-1-5-pro-no-audio"]
    async with running(tmp_path, allowed_models=allowed) as (app, provider, _):
        with pytest.raises(
            Rejected, match="doubao-seedance-2-0-720p is not available for this API key"
        ):
            await provider.submit(shot(), [], key="k")
        await provider.submit(shot(model="seedance-1-5-pro-no-audio"), [], key="k")
    assert len(app[LEDGER]) == 1


async def test_failed_job_is_refunded(tmp_path: Path) -> None:
    async with running(tmp_path, balance_usd=1.0) as (app, provider, _):
        job = await provider.submit(shot(prompt="FAIL_ME please"), [], key="k")
        result = await finish(provider, job)
    assert result.status == JobStatus.FAILED
    assert result.refunded is True
    assert "moderation" in result.message
    assert app[LEDGER].charges[0].refunded
    assert app[STATE].balance_usd == pytest.approx(1.0)


async def test_transient_404_right_after_submit_then_success(tmp_path: Path) -> None:
    async with running(tmp_path, transient_404_s=0.15) as (_, provider, _):
        job = await provider.submit(shot(), [], key="k")
        with pytest.raises(Ambiguous, match="not visible yet"):
            await provider.poll(job)
        await anyio.sleep(0.16)
        assert (await finish(provider, job)).status == JobStatus.SUCCEEDED


async def test_unknown_task_long_after_submit_fails_the_job(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, provider, _):
        old = JobHandle("relaydance", "task_nope", SHOT.model, submitted_at=time.time() - 120)
        with pytest.raises(JobFailed) as info:
            await provider.poll(old)
        assert info.value.status == 404
        fresh = dataclasses.replace(old, submitted_at=time.time())
        with pytest.raises(Ambiguous):
            await provider.poll(fresh)


async def test_injected_429_on_submit_is_rate_limited(tmp_path: Path) -> None:
    async with running(tmp_path) as (app, provider, _):
        app[FAULTS].add(Fault("submit", FaultKind.RATE_LIMIT, retry_after=7))
        with pytest.raises(RateLimited) as info:
            await provider.submit(shot(), [], key="k")
    assert info.value.retry_after == pytest.approx(7)
    assert len(app[LEDGER]) == 0


async def test_submits_per_minute_limit(tmp_path: Path) -> None:
    async with running(tmp_path, submits_per_minute=1) as (app, provider, _):
        await provider.submit(shot(), [], key="k1")
        with pytest.raises(RateLimited) as info:
            await provider.submit(shot(), [], key="k2")
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 60
    assert len(app[LEDGER]) == 1


@pytest.mark.parametrize(("kind", "charged"), SUBMIT_FAULTS)
async def test_submit_faults_are_ambiguous(tmp_path: Path, kind: FaultKind, charged: int) -> None:
    async with running(tmp_path) as (app, provider, _):
        app[FAULTS].add(Fault("submit", kind))
        with pytest.raises(Ambiguous):
            await provider.submit(shot(), [], key="k")
    assert len(app[LEDGER]) == charged  # a charged job exists: never retry blindly


async def test_connection_refused_is_not_sent(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = provider_context(SPEC, f"http://127.0.0.1:{port}/v1", tmp_path, key=KEY)
    async with RelayDanceProvider(ctx) as provider:
        with pytest.raises(NotSent):
            await provider.submit(shot(), [], key="k")


async def test_poll_faults_are_transient(tmp_path: Path) -> None:
    async with running(tmp_path) as (app, provider, _):
        job = await provider.submit(shot(), [], key="k")
        app[FAULTS].add(Fault("poll", FaultKind.RATE_LIMIT, retry_after=2))
        app[FAULTS].add(Fault("poll", FaultKind.SERVER_ERROR))
        with pytest.raises(RateLimited):
            await provider.poll(job)
        with pytest.raises(Ambiguous):
            await provider.poll(job)
        assert (await finish(provider, job)).status == JobStatus.SUCCEEDED


async def test_truncated_download_fails_the_stream(tmp_path: Path) -> None:
    async with running(tmp_path) as (app, provider, _):
        job = await provider.submit(shot(), [], key="k")
        result = await finish(provider, job)
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE))
        with pytest.raises(Ambiguous):
            await read_all(provider, job, result)


async def test_expired_url_falls_back_to_the_content_proxy(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=0.1, url_ttl_s=0.05)
    async with running(tmp_path, config) as (app, provider, _):
        job = await provider.submit(shot(), [], key="k")
        result = await finish(provider, job)
        await anyio.sleep(0.1)
        assert result.result_url is not None
        async with aiohttp.ClientSession() as session, session.get(result.result_url) as resp:
            assert resp.status == 403
        data = await read_all(provider, job, result)
        assert data[4:8] == b"ftyp"
        assert app[FAULTS].hits["content"] == 1
        app[FAULTS].add(Fault("fetch", FaultKind.EXPIRE))
        app[FAULTS].add(Fault("content", FaultKind.EXPIRE))
        with pytest.raises(FetchError) as info:
            await read_all(provider, job, result)
    assert info.value.expired
    assert len(app[LEDGER]) == 1


async def test_webhook_posts_the_final_task_json(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with serve(receiver) as hook_url, running(tmp_path) as (app, provider, _):
        extra = {"callback_url": hook_url + "/hook"}
        job = await provider.submit(shot(extra=extra), [], key="k")
        deadline = time.monotonic() + 3.0
        while not app[STATE].deliveries:
            assert time.monotonic() < deadline
            await anyio.sleep(0.03)
        assert app[STATE].deliveries == [(hook_url + "/hook", 200)]
    assert received[0]["task_id"] == job.job_id
    assert received[0]["status"] == "succeeded"
    assert received[0]["url"].startswith("http://127.0.0.1")


async def test_data_url_media_are_accepted_by_the_simulator(tmp_path: Path) -> None:
    png = tmp_path / "pier.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    resolver = MediaResolver()
    asset = Asset(MediaRole.IMAGE, path=png, sha256="ab", mime="image/png")
    async with running(tmp_path) as (app, provider, _):
        local = await resolver.resolve(asset, INLINE)
        assert local.url.startswith("data:image/png;base64,iVBORw0KGgo")
        await provider.submit(shot(), [local], key="k")  # the simulator accepts the data URL
    assert len(app[LEDGER]) == 1


async def test_closed_adapter_refuses_calls(tmp_path: Path) -> None:
    async with running(tmp_path) as (app, provider, _):
        await provider.aclose()
        await provider.aclose()  # idempotent
        job = JobHandle("relaydance", "task_x", SHOT.model, submitted_at=time.time())
        await assert_refuses_use(provider, shot(), job)
        assert len(app[LEDGER]) == 0
