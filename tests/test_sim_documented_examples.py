"""Every example request of the providers' documentation, sent verbatim, runs on its simulator.

The bodies below are copied from the providers' pages (not built by the adapters, which are not
imported here): each must be accepted (2xx with a job id) and then polled to completion. The
models endpoints are checked against the same simulators.

- Venice: https://docs.venice.ai/api-reference/endpoint/video/queue (one example body showing
  every field; each model family gets the fields it takes) and
  https://docs.venice.ai/api-reference/endpoint/models/list
- seedance2.ink: https://www.seedance2.ink/docs (image-to-video)
- New API gateway (Vidu Q3): https://docs.uniall.ai/zh-CN/models/video/vidu/create-task-old
- RelayDance: https://relaydance.com/docs/api-reference/generate-video
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline.sim.common import LEDGER, SimConfig
from pipeline.sim.newapi import app as newapi
from pipeline.sim.relaydance import app as relaydance
from pipeline.sim.seedance2 import app as seedance2
from pipeline.sim.venice import app as venice

KEY = "sim-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = SimConfig(api_key=KEY, latency_s=0.3)

# ----- Venice: the queue page's example body, verbatim ------------------------------------------

VENICE_EXAMPLE: dict[str, Any] = {
    "model": "seedance-2-0-text-to-video",
    "prompt": "Commerce being conducted in the city of Venice, Italy.",
    "duration": "10s",
    "consents": {},
    "negative_prompt": "low resolution, error, worst quality, low quality, defects",
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "upscale_factor": 2,
    "audio": True,
    "image_url": "data:image/png;base64,iVBORw0K...",
    "end_image_url": "data:image/png;base64,iVBORw0K...",
    "audio_url": "data:audio/mpeg;base64,SUQzBAA...",
    "video_url": "data:video/mp4;base64,AAAAFGZ0eXA...",
    "reference_image_urls": ["data:image/png;base64,iVBORw0K..."],
    "reference_video_urls": ["https://example.com/reference-clip.mp4"],
    "reference_audio_urls": ["data:audio/mpeg;base64,SUQzBAAAAAA..."],
    "elements": [
        {
            "frontal_image_url": "data:image/png;base64,iVBORw0K...",
            "reference_image_urls": ["data:image/png;base64,iVBORw0K..."],
        }
    ],
    "scene_image_urls": ["data:image/png;base64,iVBORw0K..."],
}
_SCALARS = (
    "model",
    "prompt",
    "duration",
    "consents",
    "negative_prompt",
    "resolution",
    "upscale_factor",
    "audio",
)
#: The example's fields each Seedance 2.0 mode takes (the page: "Available fields and valid
#: values vary by model"; image-to-video models take no aspect_ratio).
_FAMILY_FIELDS = {
    "text-to-video": (*_SCALARS, "aspect_ratio"),
    "image-to-video": (*_SCALARS, "image_url", "end_image_url"),
    "reference-to-video": (
        *_SCALARS,
        "aspect_ratio",
        "reference_image_urls",
        "reference_video_urls",
        "reference_audio_urls",
    ),
}


def venice_example(model: str) -> dict[str, Any]:
    """The documented example for ``model``: the fields of its family, values verbatim."""
    family = next(f for f in _FAMILY_FIELDS if f in model)
    body = {k: VENICE_EXAMPLE[k] for k in _FAMILY_FIELDS[family]}
    return {**body, "model": model}


SEEDANCE_2_0 = [
    f"seedance-2-0-{tier}{mode}"
    for tier in ("", "fast-")
    for mode in ("text-to-video", "image-to-video", "reference-to-video")
]

# ----- the other providers' examples, verbatim ----------------------------------------------------

SEEDANCE2_EXAMPLE = {
    "model": "seedance-2.0",
    "prompt": (
        "A young woman blows out birthday candles, warm indoor lighting, shallow depth of field"
    ),
    "mediaUrls": ["https://example.com/photo.jpg"],
    "aspectRatio": "16:9",
    "duration": 5,
    "resolution": "720p",
}
NEWAPI_EXAMPLES: dict[str, dict[str, Any]] = {
    "text-to-video": {
        "model": "viduq3p-720p",
        "prompt": "电影感航拍镜头,日出时分掠过未来海滨城市,光线柔和,镜头缓慢推进。",
        "aspect_ratio": "16:9",
        "duration": 5,
        "extra_body": {"audio": False, "seed": 42, "bgm": False},
    },
    "single-image": {
        "model": "viduq3t-540p",
        "prompt": "人物缓慢抬头并看向镜头,动作自然,镜头轻微前推。",
        "image": "https://example.com/source.png",
        "duration": 5,
        "extra_body": {"seed": 42},
    },
    "first-last-frame-offpeak": {
        "model": "viduq3p-1080p-offpeak",
        "prompt": "人物从正面自然转向侧面,身份保持稳定,动作连贯。",
        "image": "https://example.com/head.png",
        "last_image": "https://example.com/tail.png",
        "duration": 6,
    },
    "reference-images": {
        "model": "viduq3p-mix-720p",
        "prompt": "A @Image1 walking through a beach in the visual style of @Image2",
        "reference_image_urls": ["https://example.com/ref-1.png", "https://example.com/ref-2.png"],
        "aspect_ratio": "16:9",
        "duration": 5,
        "extra_body": {"audio": False, "seed": 42},
    },
}
RELAYDANCE_EXAMPLES: dict[str, dict[str, Any]] = {
    "text-to-video": {
        "model": "doubao-seedance-2-0-1080p",
        "prompt": "A timelapse of storm clouds rolling over a mountain range",
        "seconds": "10",
        "metadata": {"ratio": "16:9", "resolution": "1080p", "generate_audio": True},
    },
    "reference-image": {
        "model": "seedance-1-5-pro-with-audio",
        "prompt": "@image1 rotates slowly on a marble pedestal, studio lighting",
        "seconds": "5",
        "metadata": {
            "ratio": "1:1",
            "resolution": "720p",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/product.jpg"},
                    "role": "reference_image",
                }
            ],
        },
    },
}


# ----- helpers --------------------------------------------------------------------------------


@asynccontextmanager
async def client(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """``app`` served on loopback by aiohttp's test server."""
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def poll_until(check: Callable[[], Any], limit_s: float = 10.0) -> Any:
    """Call the coroutine function ``check`` until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish in time")


async def venice_run(cli: TestClient[web.Request, web.Application], body: dict[str, Any]) -> bytes:
    """Queue ``body`` on the Venice simulator and retrieve it until the MP4 arrives."""
    async with cli.post("/api/v1/video/queue", json=body, headers=AUTH) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    assert answer["model"] == body["model"]
    assert answer["queue_id"]
    ask = {"model": body["model"], "queue_id": answer["queue_id"]}

    async def done() -> bytes | None:
        async with cli.post("/api/v1/video/retrieve", json=ask, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            if resp.content_type == "video/mp4":
                return await resp.read()
            assert (await resp.json())["status"] == "PROCESSING"
            return None

    data: bytes = await poll_until(done)
    return data


# ----- Venice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", SEEDANCE_2_0)
async def test_venice_documented_example_runs(model: str) -> None:
    app = venice.make_app(CONFIG)
    async with client(app) as cli:
        data = await venice_run(cli, venice_example(model))
    assert data[4:8] == b"ftyp"
    assert len(app[LEDGER]) == 1


async def test_venice_example_uses_the_documented_model_verbatim() -> None:
    body = venice_example(VENICE_EXAMPLE["model"])
    assert body["model"] == "seedance-2-0-text-to-video"
    assert set(body) == {*_SCALARS, "aspect_ratio"}  # the example minus its media fields
    async with client(venice.make_app(CONFIG)) as cli:
        async with cli.post("/api/v1/video/queue", json=body, headers=AUTH) as resp:
            assert resp.status == 200
        media = {**body, "image_url": VENICE_EXAMPLE["image_url"]}  # a T2V model takes no frame
        async with cli.post("/api/v1/video/queue", json=media, headers=AUTH) as resp:
            assert resp.status == 400
            assert "image_url" in (await resp.json())["details"]


async def test_venice_models_list_is_consistent_with_the_queue() -> None:
    async with client(venice.make_app(CONFIG)) as cli:
        async with cli.get("/api/v1/models?type=video") as resp:
            listing = await resp.json()
        async with cli.get("/api/v1/models?type=bogus") as resp:
            assert resp.status == 400
        assert (listing["object"], listing["type"]) == ("list", "video")
        by_id = {entry["id"]: entry for entry in listing["data"]}
        assert "seedance-2-0-text-to-video" in by_id
        assert "seedance-2-0-reference-to-video" not in by_id  # unlisted, face-consent id
        for ident, entry in by_id.items():
            cons = entry["model_spec"]["constraints"]
            for name in ("aspect_ratios", "resolutions", "durations", "model_type", "audio"):
                assert name in cons, (ident, name)
            assert all(d.endswith("s") for d in cons["durations"])
            body: dict[str, Any] = {
                "model": ident,
                "prompt": "p",
                "duration": cons["durations"][-1],
            }
            if cons["aspect_ratios"]:
                body["aspect_ratio"] = cons["aspect_ratios"][0]
            if cons["resolutions"]:
                body["resolution"] = cons["resolutions"][0]
            if cons["model_type"] == "image-to-video" and "reference" not in ident:
                body["image_url"] = VENICE_EXAMPLE["image_url"]
            if cons["model_type"] == "video":
                body["video_url"] = VENICE_EXAMPLE["video_url"]
            if "reference" in ident:
                body["reference_image_urls"] = VENICE_EXAMPLE["reference_image_urls"]
            async with cli.post("/api/v1/video/queue", json=body, headers=AUTH) as resp:
                assert resp.status == 200, (ident, await resp.text())
            too_long = {**body, "prompt": "x" * (cons["prompt_character_limit"] + 1)}
            async with cli.post("/api/v1/video/queue", json=too_long, headers=AUTH) as resp:
                assert resp.status == 400, ident
    t2v = by_id["seedance-2-0-text-to-video"]["model_spec"]["constraints"]
    assert "10s" in t2v["durations"]
    assert "16:9" in t2v["aspect_ratios"]
    assert t2v["prompt_character_limit"] == 10000


# ----- seedance2.ink ------------------------------------------------------------------------------


async def test_seedance2_documented_example_runs() -> None:
    app = seedance2.make_app(CONFIG)  # no loopback media: example.com is a public https host
    async with client(app) as cli:
        async with cli.post(
            "/api/open/v1/video/generations", json=SEEDANCE2_EXAMPLE, headers=AUTH
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert (answer["success"], answer["status"]) == (True, "queued")
        assert answer["creditsCharged"] == 64  # the documented answer
        path = f"/api/open/v1/video/generations/{answer['requestId']}"

        async def done() -> dict[str, Any] | None:
            async with cli.get(path, headers=AUTH) as resp:
                task: dict[str, Any] = await resp.json()
            return task if task["status"] == "succeeded" else None

        task = await poll_until(done)
        assert (task["duration"], task["aspectRatio"]) == (5, "16:9")
        assert task["output"]["type"] == "video"
        assert task["error"] is None
        async with cli.get("/api/open/v1/models") as resp:
            models = await resp.json()
    assert models["success"] is True
    by_id = {entry["id"]: entry for entry in models["data"]}
    assert set(by_id) == {"seedance-2.0", "seedance-2.0-fast", "seedance-1.5-pro"}
    assert by_id["seedance-2.0"]["durations"] == list(range(4, 16))
    assert by_id["seedance-1.5-pro"]["durations"] == [5, 10]
    for entry in by_id.values():
        assert entry["aspectRatios"] == ["16:9", "9:16", "1:1"]
        assert entry["resolutions"] == ["480p", "720p", "1080p"]


# ----- New API gateway (Vidu Q3) ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NEWAPI_EXAMPLES))
async def test_newapi_documented_example_runs(name: str) -> None:
    body = NEWAPI_EXAMPLES[name]
    app = newapi.make_app(CONFIG)
    async with client(app) as cli:
        async with cli.post("/v1/video/generations", json=body, headers=AUTH) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert answer["object"] == "video.generation.job"
        assert answer["status"] == "queued"
        assert answer["task_id"]
        assert answer["model"] == body["model"]

        async def done() -> dict[str, Any] | None:
            async with cli.get(f"/v1/video/generations/{answer['task_id']}", headers=AUTH) as r:
                data: dict[str, Any] = (await r.json())["data"]
            return data if data["status"] == "SUCCESS" else None

        data = await poll_until(done)
    assert data["result_url"]
    assert len(app[LEDGER]) == 1


async def test_newapi_offpeak_refuses_audio_off() -> None:
    body = {**NEWAPI_EXAMPLES["first-last-frame-offpeak"], "extra_body": {"audio": False}}
    app = newapi.make_app(CONFIG)
    async with client(app) as cli, cli.post("/v1/video/generations", json=body, headers=AUTH) as r:
        assert r.status == 400
        assert "audio is off" in (await r.json())["message"]
    assert len(app[LEDGER]) == 0


# ----- RelayDance -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RELAYDANCE_EXAMPLES))
async def test_relaydance_documented_example_runs(name: str) -> None:
    body = RELAYDANCE_EXAMPLES[name]
    app = relaydance.make_app(CONFIG)
    async with client(app) as cli:
        async with cli.post("/v1/video/generations", json=body, headers=AUTH) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert answer["status"] == "submitted"
        assert answer["task_id"]

        async def done() -> dict[str, Any] | None:
            async with cli.get(f"/v1/video/generations/{answer['task_id']}", headers=AUTH) as r:
                task: dict[str, Any] = await r.json()
            return task if task["status"] == "succeeded" else None

        task = await poll_until(done)
    assert task["url"]
    assert task["metadata"]["ratio"] == body["metadata"]["ratio"]
    assert len(app[LEDGER]) == 1


# ----- OpenAI-style model lists of the two gateways -------------------------------------------


@pytest.mark.parametrize(
    ("make_app", "path", "documented"),
    [
        (newapi.make_app, "/v1/models", {e["model"] for e in NEWAPI_EXAMPLES.values()}),
        (relaydance.make_app, "/v1/models", {e["model"] for e in RELAYDANCE_EXAMPLES.values()}),
    ],
    ids=["newapi", "relaydance"],
)
async def test_gateway_model_lists(
    make_app: Callable[[SimConfig], web.Application], path: str, documented: set[str]
) -> None:
    async with client(make_app(CONFIG)) as cli:
        async with cli.get(path) as resp:
            assert resp.status == 401
        async with cli.get(path, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with cli.get(path, headers=AUTH) as resp:
            listing = await resp.json()
    assert listing["object"] == "list"
    for entry in listing["data"]:
        assert entry["object"] == "model"
        assert isinstance(entry["created"], int)
        assert entry["owned_by"]
    assert documented <= {entry["id"] for entry in listing["data"]}
