"""Venice adapter: codec on recorded bodies (tests/data/venice) and adapter vs simulator.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
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
    RateLimited,
    Rejected,
)
from pipeline.models import (
    Asset,
    Download,
    JobHandle,
    JobStatus,
    MediaRef,
    MediaRole,
    PollResult,
    Shot,
)
from pipeline.providers.base import INLINE, SupportsCleanup, SupportsQuote, inline_size
from pipeline.providers.codec_errors import MalformedAnswer
from pipeline.providers.http import ApiResponse
from pipeline.providers.venice import adapter as venice_mod
from pipeline.providers.venice.adapter import VeniceProvider
from pipeline.providers.venice.codec import (
    CONSENT_FIELDS,
    MODELS,
    PRIVATE_MODELS,
    STATUSES,
    VENICE_MODELS,
    body_size,
    build_quote,
    build_submit,
    caps_from_constraints,
    normalise_status,
    parse_error,
    parse_queue,
    parse_quote,
    parse_status,
    with_consent,
)
from pipeline.providers.venice.spec import SPEC
from pipeline.render.clips import probe
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig
from pipeline.sim.venice.app import BASE_PATH, STATE, make_app
from pipeline.transfer.upload import MediaResolver
from tests import provider_helpers
from tests.provider_helpers import assert_refuses_use, load_json, served_adapter

DATA = Path(__file__).parent / "data" / "venice"
KEY = "sim-key-venice-0123456789"
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def load(name: str) -> Any:
    return load_json("venice", name)


def make_shot(
    model: str = "wan-2-7-text-to-video",
    *,
    prompt: str = "a harbor at dawn, slow push-in",
    duration: int = 5,
    ratio: str = "16:9",
    resolution: str | None = "720p",
    audio: bool = False,
    consent: str | None = None,
    extra: Mapping[str, Any] | None = None,
    references: tuple[Asset, ...] = (),
    image: Asset | None = None,
) -> Shot:
    return provider_helpers.make_shot(
        "venice",
        model,
        prompt=prompt,
        duration=duration,
        aspect_ratio=ratio,
        resolution=resolution,
        audio=audio,
        consent=consent,
        extra=extra or {},
        references=references,
        image=image,
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    config: SimConfig | None = None,
    api_key: str | None = KEY,
    **options: Any,
) -> AsyncIterator[tuple[VeniceProvider, web.Application, str]]:
    app = make_app(config or SimConfig(api_key=KEY, latency_s=0.2), **options)
    async with served_adapter(SPEC, VeniceProvider, app, tmp_path, key=api_key) as (provider, url):
        yield provider, app, url


async def until_done(provider: VeniceProvider, job: JobHandle) -> PollResult:
    for _ in range(200):
        result = await provider.poll(job)
        if result.status is not JobStatus.RUNNING and result.status is not JobStatus.QUEUED:
            return result
        await anyio.sleep(0.03)
    raise AssertionError("job did not finish")


async def read_all(download: Download) -> bytes:
    return b"".join([chunk async for chunk in download.chunks])


async def fetch_bytes(provider: VeniceProvider, job: JobHandle, result: PollResult) -> bytes:
    async with provider.fetch(job, result) as download:
        return await read_all(download)


def assert_mp4(data: bytes, tmp_path: Path, seconds: int) -> None:
    assert data[4:8] == b"ftyp"
    out = tmp_path / "out.mp4"
    out.write_bytes(data)
    assert abs(probe(out).duration_s - seconds) < 0.5


# ----- codec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), sorted(STATUSES.items()))
def test_every_status_synonym_any_case(raw: str, expected: JobStatus) -> None:
    assert normalise_status(raw) is expected
    assert normalise_status(raw.upper()) is expected
    assert parse_status({"status": raw.title()}).status is expected


def test_unknown_status_counts_as_running() -> None:
    assert normalise_status("UNKNOWN") is JobStatus.RUNNING
    assert parse_status({"status": "warming_up"}).status is JobStatus.RUNNING


def test_processing_eta_and_progress_from_milliseconds() -> None:
    result = parse_status(load("retrieve_processing"))
    assert result.status is JobStatus.RUNNING
    assert result.raw_status == "PROCESSING"
    assert result.eta_s == pytest.approx(91.8)
    assert result.progress == pytest.approx(53200 / 145000)


def test_completed_private_uses_stored_download_url() -> None:
    url = load("queue_ok_private")["download_url"]
    result = parse_status(load("retrieve_completed_private"), download_url=url)
    assert result.status is JobStatus.SUCCEEDED
    assert result.result_url == url
    assert result.eta_s == 0.0


def test_guide_shapes() -> None:
    assert parse_status(load("retrieve_guide_queued")).status is JobStatus.QUEUED
    running = parse_status(load("retrieve_guide_running"))
    assert (running.status, running.eta_s) == (JobStatus.RUNNING, 60.0)
    failed = parse_status(load("retrieve_guide_failed"))
    assert failed.status is JobStatus.FAILED
    assert failed.message == "Generation failed"
    upscale = parse_status(load("retrieve_upscale_completed"))
    assert upscale.result_url == "https://outputs.venice.ai/video/upscaled-123.mp4"


def test_status_without_status_field_is_an_error() -> None:
    with pytest.raises(MalformedAnswer, match="status"):
        parse_status({"average_execution_time": 1})


def test_queue_answers() -> None:
    normal = parse_queue(load("queue_ok"))
    assert normal.queue_id == "123e4567-e89b-12d3-a456-426614174000"
    assert normal.download_url is None
    private = parse_queue(load("queue_ok_private"))
    assert private.download_url is not None
    assert private.download_url.startswith("https://private-share.venice.ai/")
    bad: Any
    for bad in ({"model": "m"}, {"model": "m", "queue_id": ""}, [], "ok", None):
        with pytest.raises(MalformedAnswer, match="unexpected queue answer"):
            parse_queue(bad)


def test_quote_answer() -> None:
    assert parse_quote(load("quote_ok")) == 0.35
    for bad in ({}, {"quote": "0.3"}, {"quote": True}, {"quote": -1}, None):
        with pytest.raises(MalformedAnswer, match="quote"):
            parse_quote(bad)


def test_error_content_policy_nested_and_flat() -> None:
    nested = parse_error(load("error_422_provider_content_policy"))
    assert nested.code == "provider_content_policy"
    assert nested.credits_refunded is True
    assert nested.recommended_model == "wan-2-7-text-to-video"
    assert "Credits have been refunded" in nested.message
    flat = parse_error(load("error_422_flat"))
    assert flat.credits_refunded is True
    assert flat.message.startswith("The video provider rejected")
    violation = parse_error(load("error_422_content_violation"))
    assert violation.suggested_prompt == "A calm harbor at dawn"
    assert violation.credits_refunded is None


def test_error_detailed_dict_and_string_details() -> None:
    detailed = parse_error(load("error_400_detailed"))
    assert detailed.message.startswith("Invalid request parameters (duration: Invalid enum")
    plain = parse_error(load("error_400_details_string"))
    assert plain.message == (
        "Invalid request parameters (This model does not support aspect_ratio)"
    )
    issues_only = parse_error({"error": "Bad", "issues": [{"path": ["x"], "message": "m1"}]})
    assert issues_only.message == "Bad (m1)"


def test_error_consent_and_codes() -> None:
    consent = parse_error(load("error_409_needs_consent"))
    assert consent.needs_consent
    assert consent.face_media_roles == ("reference_image",)
    assert consent.consent_version == "v2.0"
    assert consent.policy_text is not None
    assert "legal right" in consent.policy_text
    assert consent.docs_url is not None
    assert parse_error(load("error_413")).code == "PAYLOAD_TOO_LARGE"
    wallet = parse_error(load("error_402_wallet"))
    assert (wallet.code, wallet.message) == ("PAYMENT_REQUIRED", "Payment required")
    assert parse_error(load("error_402_x402")).message == "Authentication required"
    assert "Diem" in parse_error(load("error_402_balance")).message
    assert parse_error(load("error_401")).message == "Authentication failed"
    assert "Pro users" in parse_error(load("error_401_pro_only")).message
    assert parse_error(load("error_404_media")).message.startswith("Media could not be found")
    assert not parse_error(load("error_429_budget")).needs_consent
    assert parse_error(b"<html>bad gateway</html>").message == "<html>bad gateway</html>"
    assert parse_error(None).message == "no error body"


def test_build_submit_fields() -> None:
    media = [
        MediaRef(MediaRole.REFERENCE_IMAGE, "https://x/a.png"),
        MediaRef(MediaRole.REFERENCE_IMAGE, "https://x/b.png"),
        MediaRef(MediaRole.REFERENCE_VIDEO, "https://x/c.mp4"),
        MediaRef(MediaRole.REFERENCE_AUDIO, "data:audio/wav;base64,AAAA"),
    ]
    shot = make_shot(
        "seedance-2-0-reference-to-video", extra={"negative_prompt": "blur"}, audio=True
    )
    body = build_submit(shot, media)
    assert body == {
        "model": "seedance-2-0-reference-to-video",
        "prompt": shot.prompt,
        "duration": "5s",
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "audio": True,
        "reference_image_urls": ["https://x/a.png", "https://x/b.png"],
        "reference_video_urls": ["https://x/c.mp4"],
        "reference_audio_urls": ["data:audio/wav;base64,AAAA"],
        "negative_prompt": "blur",
    }


def test_build_submit_omits_ratio_and_audio_where_the_model_takes_none() -> None:
    frames = [
        MediaRef(MediaRole.IMAGE, "https://x/first.png"),
        MediaRef(MediaRole.END_IMAGE, "https://x/last.png"),
    ]
    i2v = build_submit(make_shot("seedance-2-0-image-to-video"), frames)
    assert "aspect_ratio" not in i2v
    assert (i2v["image_url"], i2v["end_image_url"]) == ("https://x/first.png", "https://x/last.png")
    grok = build_submit(make_shot("grok-imagine-text-to-video-private", resolution=None), [])
    assert "audio" not in grok
    assert "resolution" not in grok
    assert grok["aspect_ratio"] == "16:9"
    quote = build_quote(make_shot("seedance-2-0-image-to-video"))
    assert quote["aspect_ratio"] == "16:9"
    assert "prompt" not in quote


def test_with_consent_adds_exactly_three_trues() -> None:
    body = {"model": "m", "prompt": "p"}
    signed = with_consent(body)
    assert signed["consents"] == {"seedance": dict.fromkeys(CONSENT_FIELDS, True)}
    assert len(CONSENT_FIELDS) == 3
    assert "consents" not in body
    assert {k: v for k, v in signed.items() if k != "consents"} == body


def test_sizes() -> None:
    assert inline_size(10, "image/png") == len("data:image/png;base64,") + 16
    assert body_size({"a": "é"}) == len(json.dumps({"a": "é"}).encode())


def test_caps_from_recorded_models_entry() -> None:
    entry = load("models_video")["data"][0]
    caps = caps_from_constraints(entry)
    assert (caps.min_image_short_side, caps.image_aspect_range) == (300, (0.4, 2.5))
    # Video/audio reference limits and file sizes are documented, not in /models [venice.md §1.4].
    table = dataclasses.replace(
        MODELS["seedance-1-5-pro-image-to-video-basic"],
        max_media_bytes=None,
        reference_video_s=None,
        max_reference_video_total_s=None,
        max_reference_audio_s=None,
    )
    assert caps == table


def test_spec() -> None:
    assert SPEC.defaults.requests_per_minute == 40
    assert SPEC.defaults.polls_per_minute == 120
    assert SPEC.defaults.api_key_env == "VENICE_API_KEY"
    assert SPEC.media.data_urls
    assert 30 * 1024**2 < SPEC.media.max_inline_bytes < 35 * 1024**2
    assert set(SPEC.media.inline_kinds) == {"image", "video", "audio"}
    assert SPEC.default_model in SPEC.models
    assert {m for m in MODELS if m.endswith("-private")} == PRIVATE_MODELS
    assert MODELS["seedance-2-0-reference-to-video"].max_reference_images == 9
    assert SPEC.check is not None
    audio_only = (Asset(MediaRole.REFERENCE_AUDIO, url="https://x/a.mp3"),)
    caps = MODELS["seedance-2-0-reference-to-video"]
    assert SPEC.check(make_shot(references=audio_only), caps) == [
        ("references", "Venice needs at least one reference image or video with audio")
    ]
    paired = (*audio_only, Asset(MediaRole.REFERENCE_IMAGE, url="https://x/i.png"))
    assert not SPEC.check(make_shot(references=paired), caps)


# ----- adapter vs simulator --------------------------------------------------------------------


async def test_happy_path_normal_model(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        assert isinstance(provider, SupportsQuote)
        assert isinstance(provider, SupportsCleanup)
        shot = make_shot()
        price = await provider.quote(shot)
        assert price == pytest.approx(0.05 * 5 * 2)
        job = await provider.submit(shot, [], key="run:harbor-s01:1")
        assert job.provider == "venice"
        assert job.model == shot.model
        assert not job.data
        first = await provider.poll(job)
        assert first.status is JobStatus.RUNNING
        assert first.raw_status == "PROCESSING"
        assert first.eta_s is not None
        assert 0 < first.eta_s <= 0.2
        done = await until_done(provider, job)
        assert done.status is JobStatus.SUCCEEDED
        assert done.raw_status == "video/mp4"
        assert_mp4(await fetch_bytes(provider, job, done), tmp_path, 5)
        charges = app[LEDGER].charges
        assert len(charges) == 1
        assert (charges[0].job_id, charges[0].cost_usd) == (job.job_id, price)
        assert not charges[0].refunded
        await provider.cleanup(job)
        with pytest.raises(JobFailed, match="media not found") as failed:
            await provider.poll(job)
        assert failed.value.refunded is None
        assert failed.value.status == 404


async def test_private_model_download_link(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, url):
        shot = make_shot("grok-imagine-text-to-video-private", duration=3, resolution="480p")
        job = await provider.submit(shot, [], key="k")
        link = job.data["download_url"]
        assert link.startswith(url + "/v1/share/read/")
        done = await until_done(provider, job)
        assert (done.status, done.raw_status, done.result_url) == (
            JobStatus.SUCCEEDED,
            "COMPLETED",
            link,
        )
        assert_mp4(await fetch_bytes(provider, job, done), tmp_path, 3)
        assert app[FAULTS].hits.get("fetch") == 1
        await provider.cleanup(job)
        assert app[FAULTS].hits.get("delete") == 1
        assert app[FAULTS].hits.get("complete") == 1
        with pytest.raises(FetchError) as gone:
            await fetch_bytes(provider, job, done)
        assert gone.value.expired
        assert gone.value.status == 410
        assert len(app[LEDGER]) == 1


async def test_private_link_is_used_up_after_three_gets(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, _, _):
        job = await provider.submit(make_shot("grok-imagine-text-to-video-private"), [], key="k")
        done = await until_done(provider, job)
        for _ in range(3):
            assert (await fetch_bytes(provider, job, done))[4:8] == b"ftyp"
        with pytest.raises(FetchError) as used:
            await fetch_bytes(provider, job, done)
        assert used.value.expired


async def test_expired_result_url(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=0.1, url_ttl_s=0.0)
    async with running(tmp_path, config=config) as (provider, _, _):
        job = await provider.submit(make_shot("grok-imagine-text-to-video-private"), [], key="k")
        done = await until_done(provider, job)
        with pytest.raises(FetchError) as expired:
            await fetch_bytes(provider, job, done)
        assert expired.value.expired
        assert expired.value.status == 410


async def test_wrong_key_and_no_key_are_rejected(tmp_path: Path) -> None:
    async with running(tmp_path, api_key="wrong-key-abcdef") as (provider, app, _):
        with pytest.raises(Rejected, match="VENICE_API_KEY") as wrong:
            await provider.submit(make_shot(), [], key="k")
        assert wrong.value.status == 401
        assert "wrong-key" not in str(wrong.value)
    async with running(tmp_path, api_key=None) as (provider, app, _):
        with pytest.raises(Rejected, match="no credentials") as none:
            await provider.submit(make_shot(), [], key="k")
        assert none.value.status == 402
        assert len(app[LEDGER]) == 0


@pytest.mark.parametrize(
    ("shot", "pattern"),
    [
        (make_shot("no-such-model"), "model"),
        (make_shot(duration=7), "duration"),
        (make_shot(ratio="4:5"), "aspect_ratio"),
        (make_shot(resolution="4k"), "resolution"),
        (make_shot("seedance-1-5-pro-image-to-video-basic", prompt="x" * 3501), "3500"),
        (make_shot(extra={"prompt": ""}), "prompt"),
        (make_shot(extra={"audio": "yes"}), "boolean"),
        (make_shot(extra={"seed": 3}), "seed"),
        (make_shot("grok-imagine-text-to-video-private", extra={"audio": True}), "audio"),
        (
            make_shot(
                "seedance-2-0-image-to-video",
                extra={"image_url": "https://x/a.png", "aspect_ratio": "16:9"},
            ),
            "does not support aspect_ratio",
        ),
        (make_shot("wan-2-7-image-to-video", ratio=""), "requires image_url"),
        (
            make_shot(
                "seedance-2-0-reference-to-video",
                extra={"reference_image_urls": [f"https://x/{i}.png" for i in range(10)]},
            ),
            "at most 9",
        ),
        (
            make_shot(
                "seedance-2-0-reference-to-video",
                extra={"reference_audio_urls": ["https://x/a.mp3"]},
            ),
            "at least one reference image",
        ),
        (
            make_shot(
                "seedance-2-0-reference-to-video",
                extra={"consents": {"seedance": {"confirmed_terms_and_privacy": True}}},
            ),
            "consents",
        ),
    ],
)
async def test_invalid_requests_are_rejected_without_charge(
    tmp_path: Path, shot: Shot, pattern: str
) -> None:
    async with running(tmp_path) as (provider, app, _):
        with pytest.raises(Rejected, match=pattern) as err:
            await provider.submit(shot, [], key="k")
        assert err.value.status == 400
        assert len(app[LEDGER]) == 0


async def test_consent_refused_without_opt_in(tmp_path: Path) -> None:
    face = [MediaRef(MediaRole.REFERENCE_IMAGE, "https://cdn.example/FACE-1.png")]
    async with running(tmp_path) as (provider, app, _):
        with pytest.raises(Rejected) as err:
            await provider.submit(make_shot("seedance-2-0-reference-to-video"), face, key="k")
        text = str(err.value)
        assert err.value.status == 409
        assert "consent: seedance" in text
        assert "legal right" in text
        assert "reference_image" in text
        assert len(app[LEDGER]) == 0
        assert app[STATE].consent_requests == 1


async def test_consent_resent_once_and_remembered(tmp_path: Path) -> None:
    png = tmp_path / "face.png"
    png.write_bytes(PNG_HEAD + b"FACE" + b"\x00" * 64)
    async with running(tmp_path) as (provider, app, _):
        asset = Asset(MediaRole.REFERENCE_IMAGE, path=png, sha256="f1", mime="image/png")
        ref = await MediaResolver().resolve(asset, INLINE)
        assert ref.url.startswith("data:image/png;base64,")
        shot = make_shot("seedance-2-0-reference-to-video", consent="seedance")
        job = await provider.submit(shot, [ref], key="k")
        assert app[FAULTS].hits["submit"] == 2
        assert app[STATE].consent_requests == 1
        assert len(app[LEDGER]) == 1
        assert app[LEDGER].charges[0].job_id == job.job_id
        again = make_shot("seedance-2-0-reference-to-video")  # same bytes: attested already
        await provider.submit(again, [ref], key="k2")
        assert app[FAULTS].hits["submit"] == 3
        assert len(app[LEDGER]) == 2
        basic = make_shot("seedance-2-0-text-to-video-basic")  # public models never ask
        await provider.submit(basic, [], key="k3")
        assert app[STATE].consent_requests == 1


def test_409_answers_without_the_simulator() -> None:
    adapter = VeniceProvider.__new__(VeniceProvider)  # _accepted is pure: no session needed
    plain = ApiResponse(409, {}, b'{"error": "Conflict"}')
    with pytest.raises(Rejected, match="Conflict") as err:
        adapter._accepted(plain, make_shot(), consented=False)
    assert "consent" not in str(err.value)
    again = ApiResponse(409, {}, (DATA / "error_409_needs_consent.json").read_bytes())
    with pytest.raises(Rejected, match="asked again"):
        adapter._accepted(again, make_shot(), consented=True)


async def test_content_policy_failure_is_refunded(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot(prompt="harbor FAIL_ME"), [], key="k")
        with pytest.raises(JobFailed, match="wan-2-7-text-to-video") as failed:
            await until_done(provider, job)
        assert failed.value.refunded is True
        assert failed.value.status == 422
        assert app[LEDGER].charges[0].refunded


async def test_inference_failure_refund_unknown(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot(prompt="INFERENCE_FAIL now"), [], key="k")
        with pytest.raises(JobFailed, match="inference failed") as failed:
            await until_done(provider, job)
        assert failed.value.refunded is None
        assert failed.value.status == 500
        assert not app[LEDGER].charges[0].refunded


async def test_guide_statuses(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, latency_s=1.0)
    async with running(tmp_path, config=config, guide_statuses=True) as (provider, _, _):
        job = await provider.submit(make_shot(), [], key="k")
        first = await provider.poll(job)
        assert (first.status, first.raw_status) == (JobStatus.QUEUED, "queued")


# ----- faults ---------------------------------------------------------------------------------


async def test_429_on_submit_is_rate_limited(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        app[FAULTS].add(Fault("submit", FaultKind.RATE_LIMIT, retry_after=2.5))
        with pytest.raises(RateLimited) as err:
            await provider.submit(make_shot(), [], key="k")
        assert err.value.retry_after == 2.5
        assert len(app[LEDGER]) == 0


async def test_reset_before_submit_raises_without_charge(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        app[FAULTS].add(Fault("submit", FaultKind.RESET_BEFORE))
        with pytest.raises((NotSent, Ambiguous)):
            await provider.submit(make_shot(), [], key="k")
        assert len(app[LEDGER]) == 0


@pytest.mark.parametrize("kind", [FaultKind.RESET_AFTER, FaultKind.SERVER_ERROR_AFTER])
async def test_lost_submit_answer_is_ambiguous_and_charged(tmp_path: Path, kind: FaultKind) -> None:
    async with running(tmp_path) as (provider, app, _):
        app[FAULTS].add(Fault("submit", kind))
        with pytest.raises(Ambiguous):
            await provider.submit(make_shot(), [], key="k")
        assert len(app[LEDGER]) == 1


async def test_unparsable_2xx_submit_is_ambiguous(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        app[FAULTS].add(Fault("submit", FaultKind.TRUNCATE))
        with pytest.raises(Ambiguous):
            await provider.submit(make_shot(), [], key="k")
        assert len(app[LEDGER]) == 1


async def test_poll_server_error_is_transient(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot(), [], key="k")
        app[FAULTS].add(Fault("poll", FaultKind.SERVER_ERROR))
        with pytest.raises(Ambiguous):
            await provider.poll(job)
        app[FAULTS].add(Fault("poll", FaultKind.RATE_LIMIT, retry_after=1.0))
        with pytest.raises(RateLimited):
            await provider.poll(job)
        assert (await until_done(provider, job)).status is JobStatus.SUCCEEDED


async def test_truncated_private_download_fails(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot("grok-imagine-text-to-video-private"), [], key="k")
        done = await until_done(provider, job)
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE))
        with pytest.raises(Ambiguous, match="payload is not completed"):
            await fetch_bytes(provider, job, done)


async def test_truncated_retrieve_body_fails(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot(), [], key="k")
        done = await until_done(provider, job)
        app[FAULTS].add(Fault("poll", FaultKind.TRUNCATE))  # normal models: bytes on retrieve
        with pytest.raises(Ambiguous, match="payload is not completed"):
            await fetch_bytes(provider, job, done)


async def test_expire_fault_on_download(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, app, _):
        job = await provider.submit(make_shot("grok-imagine-text-to-video-private"), [], key="k")
        done = await until_done(provider, job)
        app[FAULTS].add(Fault("fetch", FaultKind.EXPIRE))
        with pytest.raises(FetchError) as err:
            await fetch_bytes(provider, job, done)
        assert err.value.expired


async def test_rate_limit_and_headers(tmp_path: Path) -> None:
    async with running(tmp_path, queue_per_minute=2) as (provider, app, url):
        await provider.submit(make_shot(), [], key="a")
        async with aiohttp.ClientSession() as session:
            body = {"model": "wan-2-7-text-to-video", "prompt": "p", "duration": "5s"}
            headers = {"Authorization": f"Bearer {KEY}"}
            async with session.post(
                f"{url}{BASE_PATH}/video/queue", json=body, headers=headers
            ) as resp:
                assert resp.status == 200
                assert resp.headers["x-ratelimit-limit-requests"] == "2"
                assert resp.headers["x-ratelimit-remaining-requests"] == "0"
                assert int(resp.headers["x-ratelimit-reset-requests"]) > 1e12
        with pytest.raises(RateLimited) as err:
            await provider.submit(make_shot(), [], key="c")
        assert err.value.retry_after is not None
        assert 55 < err.value.retry_after <= 60
        assert len(app[LEDGER]) == 2


async def test_error_budget_lockout(tmp_path: Path) -> None:
    async with running(tmp_path, error_budget=2) as (provider, app, _):
        for _ in range(3):
            with pytest.raises(Rejected):
                await provider.submit(make_shot(duration=7), [], key="k")
        with pytest.raises(RateLimited, match="Too many failed attempts") as err:
            await provider.submit(make_shot(), [], key="k")
        assert err.value.retry_after is not None
        assert 29 < err.value.retry_after <= 30
        other = make_shot("seedance-2-0-text-to-video-basic")  # budget is per key and model
        await provider.submit(other, [], key="k")
        assert len(app[LEDGER]) == 1


async def test_local_body_limit_refuses_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(venice_mod, "MAX_BODY_BYTES", 500)
    async with running(tmp_path) as (provider, app, _):
        with pytest.raises(Rejected, match="35 MB"):
            await provider.submit(make_shot(prompt="x" * 600), [], key="k")
        assert "submit" not in app[FAULTS].hits


async def test_raw_protocol_errors(tmp_path: Path) -> None:
    async with running(tmp_path, max_body_bytes=2000) as (_, app, url):
        auth = {"Authorization": f"Bearer {KEY}"}
        queue = f"{url}{BASE_PATH}/video/queue"
        async with aiohttp.ClientSession() as session:
            async with session.post(queue, data=b"{}", headers=auth) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == "'Content-Type' must be 'application/json'"
            typed = {**auth, "Content-Type": "application/json"}
            async with session.post(queue, data=b"{not json", headers=typed) as resp:
                assert (resp.status, (await resp.json())["error"]) == (400, "Invalid JSON request")
            big = {"model": "wan-2-7-text-to-video", "prompt": "x" * 3000, "duration": "5s"}
            async with session.post(queue, json=big, headers=auth) as resp:
                assert resp.status == 413
                assert (await resp.json())["code"] == "PAYLOAD_TOO_LARGE"
            async with session.post(queue, json={}) as resp:
                assert resp.status == 402
                assert (await resp.json())["x402Version"] == 2
                assert "PAYMENT-REQUIRED" in resp.headers
            async with session.get(f"{url}{BASE_PATH}/models?type=video") as resp:
                listing = await resp.json()
            async with session.get(f"{url}{BASE_PATH}/models?type=bogus") as resp:
                assert resp.status == 400
    assert listing["object"] == "list"
    by_id = {entry["id"]: entry for entry in listing["data"]}
    # The face-consent ids are not in the public list; every other model of the table is.
    unlisted = {k for k, v in VENICE_MODELS.items() if v.face_consent}
    assert set(MODELS) - unlisted <= set(by_id)
    assert not unlisted & set(by_id)
    for ident, entry in by_id.items():
        if ident not in MODELS:
            continue  # a model the adapter does not know (validated with a warning)
        caps = caps_from_constraints(entry)
        assert caps.durations == MODELS[ident].durations
        assert set(caps.aspect_ratios) == set(MODELS[ident].aspect_ratios)
    assert len(app[LEDGER]) == 0


# ----- media and lifecycle ------------------------------------------------------------------


async def test_inline_media_reach_the_simulator(tmp_path: Path) -> None:
    png = tmp_path / "frame.png"
    png.write_bytes(PNG_HEAD)
    wav = tmp_path / "voice.wav"
    wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 16)
    resolver = MediaResolver()
    async with running(tmp_path) as (provider, app, _):
        local = await resolver.resolve(Asset(MediaRole.IMAGE, path=png, mime="image/png"), INLINE)
        assert local.url.startswith("data:image/png;base64,")
        audio = Asset(MediaRole.REFERENCE_AUDIO, path=wav, mime="audio/wav")
        assert (await resolver.resolve(audio, INLINE)).url.startswith("data:audio/wav;base64,")
        job = await provider.submit(make_shot("wan-2-7-image-to-video", ratio=""), [local], key="k")
        assert job.job_id
        assert len(app[LEDGER]) == 1


def test_spec_media_policy_inlines_up_to_the_body_limit() -> None:
    assert SPEC.media.data_urls
    assert 34 * 1024**2 < SPEC.media.max_inline_bytes < 35 * 1024**2


async def test_closed_adapter_refuses_calls(tmp_path: Path) -> None:
    async with running(tmp_path) as (provider, _, _):
        await provider.aclose()
        await provider.aclose()
        with pytest.raises(RuntimeError, match="aclose"):
            await provider.submit(make_shot(), [], key="k")
        job = JobHandle("venice", "q-1", "wan-2-7-text-to-video", submitted_at=0.0)
        await assert_refuses_use(provider, make_shot(), job)
