"""The simulated object store of `--simulate`: the real storage code (obstore) against it, signed
and expiring URLs, what it refuses, and a rehearsal that needs no bucket and no AWS variables."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

from pipeline import sim
from pipeline.engine.options import RunOptions
from pipeline.engine.preflight import preflight
from pipeline.engine.runner import execute
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.settings import StorageSettings
from pipeline.sim import objectstore
from pipeline.sim.common import Handler, SimConfig, fetch_media, serve
from pipeline.transfer.storage import ObjectStorage, StorageError, StoreAccess
from tests.conftest import tiny_png


@pytest.fixture
async def store() -> AsyncIterator[objectstore.ServedStore]:
    async with objectstore.running() as served:
        yield served


def access(served: objectstore.ServedStore, secret: str | None = None) -> StoreAccess:
    return StoreAccess(
        served.endpoint_url,
        served.access_key_id,
        secret or served.secret_access_key,
        served.region,
    )


def storage(served: objectstore.ServedStore, secret: str | None = None) -> ObjectStorage:
    settings = StorageSettings(url="s3://media-bucket/run one", presign_ttl="2h")
    return ObjectStorage(settings, access=access(served, secret), environ={})


async def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as resp:
        return resp.status, await resp.read()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


async def test_uploads_are_stored_once_and_served_through_presigned_urls(
    tmp_path: Path, store: objectstore.ServedStore
) -> None:
    frame = tiny_png(tmp_path / "frame.png")
    objects = storage(store)
    assert objects.where == f"s3://media-bucket/run one at {store.endpoint_url}"
    assert await objects.ensure(frame, "abc.png") is True
    assert await objects.ensure(frame, "abc.png") is False  # HEAD found it: not PUT again
    signed = await objects.sign("abc.png")
    assert signed.url.startswith(f"{store.endpoint_url}/media-bucket/run%20one/abc.png?")
    assert await get(signed.url) == (200, frame.read_bytes())
    # A provider simulator fetches it as the real service would, and sees a PNG.
    assert await fetch_media([("image", signed.url)]) is None
    assert store.state.served("PUT") == ["media-bucket/run one/abc.png"]
    assert store.state.served("GET") == ["media-bucket/run one/abc.png"] * 2


async def test_the_preflight_roundtrip_leaves_nothing_behind(
    tmp_path: Path, store: objectstore.ServedStore
) -> None:
    name = await storage(store).roundtrip()
    assert name.startswith(".pipeline-preflight-")
    assert store.state.objects == {}
    assert [m for m, _, _ in store.state.log] == ["PUT", "GET", "POST"]  # POST: DeleteObjects


async def test_an_expired_presigned_url_is_refused(
    tmp_path: Path, store: objectstore.ServedStore
) -> None:
    objects = storage(store)
    await objects.ensure(tiny_png(tmp_path / "f.png"), "f.png")
    signed = await objects.sign("f.png", ttl_s=60)
    assert (await get(signed.url))[0] == 200
    store.state.skew_s = 61.0  # the store's clock, a minute later
    status, body = await get(signed.url)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"Request has expired" in body
    problem = await fetch_media([("image", signed.url)])
    assert problem is not None
    assert "answered HTTP 403" in problem


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ("signature", b"SignatureDoesNotMatch"),
        ("other object", b"SignatureDoesNotMatch"),
        ("longer expiry", b"SignatureDoesNotMatch"),
        ("other method", b"SignatureDoesNotMatch"),
        ("unsigned", b"AccessDenied"),
        ("other access key", b"InvalidAccessKeyId"),
    ],
)
async def test_a_tampered_presigned_url_is_refused(
    tmp_path: Path, store: objectstore.ServedStore, tamper: str, code: bytes
) -> None:
    objects = storage(store)
    frame = tiny_png(tmp_path / "f.png")
    await objects.ensure(frame, "f.png")
    await objects.ensure(frame, "g.png")
    url = (await objects.sign("f.png")).url
    method = "GET"
    if tamper == "signature":
        sig = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
        url = with_query(url, **{"X-Amz-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    elif tamper == "other object":
        url = url.replace("/f.png?", "/g.png?")
    elif tamper == "longer expiry":
        url = with_query(url, **{"X-Amz-Expires": "604800"})
    elif tamper == "other method":
        method = "DELETE"
    elif tamper == "unsigned":
        url = url.split("?")[0]
    else:
        credential = dict(parse_qsl(urlsplit(url).query))["X-Amz-Credential"]
        scope = credential.split("/", 1)[1]
        url = with_query(url, **{"X-Amz-Credential": f"SOMEONEELSE/{scope}"})
    status, body = await get(url, method)
    assert status == 403
    assert b"<Code>" + code + b"</Code>" in body
    assert ("media-bucket", "run one/f.png") in store.state.objects  # nothing was deleted


async def test_requests_signed_with_another_secret_are_denied(
    tmp_path: Path, store: objectstore.ServedStore
) -> None:
    with pytest.raises(StorageError) as caught:
        await storage(store, secret="not-the-store-secret").ensure(
            tiny_png(tmp_path / "f.png"), "f.png"
        )
    assert caught.value.kind == "denied"
    assert store.state.objects == {}


async def test_files_over_5_mib_go_up_in_parts(
    tmp_path: Path, store: objectstore.ServedStore
) -> None:
    big = tmp_path / "reference.mp4"
    big.write_bytes(os.urandom(6 * 1024 * 1024 + 17))
    objects = storage(store)
    assert await objects.ensure(big, "ref.mp4") is True
    methods = [m for m, _, _ in store.state.log]
    assert methods.count("POST") == 2  # create and complete the multipart upload
    assert methods.count("PUT") == 2  # two parts
    assert await get((await objects.sign("ref.mp4")).url) == (200, big.read_bytes())


async def test_aws_variables_neither_help_nor_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAREALKEY",
        "AWS_SECRET_ACCESS_KEY": "real-secret",
        "AWS_SESSION_TOKEN": "session-canary-7f3a",
        "AWS_ENDPOINT": "http://127.0.0.1:9",
        "AWS_SKIP_SIGNATURE": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
    }.items():
        monkeypatch.setenv(name, value)
    seen: list[str] = []

    @web.middleware
    async def spy(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.extend(f"{k}: {v}" for k, v in request.headers.items())
        return await handler(request)

    app = objectstore.make_app()
    app.middlewares.append(spy)
    async with serve(app) as origin:
        state = app[objectstore.STORE]
        served = objectstore.ServedStore(origin, state.access_key, state.secret, state.region, app)
        objects = ObjectStorage(StorageSettings(url="s3://b/p"), access=access(served))
        assert await objects.ensure(tiny_png(tmp_path / "f.png"), "f.png") is True
    assert state.served("PUT") == ["b/p/f.png"]
    assert seen
    assert not [h for h in seen if "canary" in h or "AKIAREALKEY" in h]


def seedance_manifest(tmp_path: Path, prompt: str = "harbor at dawn") -> Path:
    tiny_png(tmp_path / "frame.png", size=(640, 360))
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: store\n"
        "storage: {url: 'gs://somebody-elses-bucket/media', endpoint_url: 'https://r2.example'}\n"
        "defaults: {provider: seedance2, model: seedance-2.0, duration: 5}\n"
        f"scenes:\n  - id: a\n    shots:\n      - {{id: s1, prompt: {prompt}, image: frame.png}}\n"
    )
    return path


async def test_preflight_checks_the_simulated_store_instead_of_the_manifests(
    tmp_path: Path, store: objectstore.ServedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    manifest = load_manifest(seedance_manifest(tmp_path))
    problems = await preflight(manifest, api_keys={}, storage_access=access(store))
    assert [p.subject for p in problems] == ["seedance2"]  # its key; the store answered
    assert store.state.served("PUT")[0].startswith("somebody-elses-bucket/media/.pipeline-pre")
    without = await preflight(manifest, api_keys={})
    assert "storage" in [p.subject for p in without]  # the manifest's own store: no credentials


async def test_a_retried_rehearsal_uploads_again_to_its_own_store(tmp_path: Path) -> None:
    """URLs recorded in the journal were signed by a store gone with its process: a later
    rehearsal of the same run directory uploads and signs again instead of reusing them."""
    manifest = load_manifest(seedance_manifest(tmp_path))
    run_dir = tmp_path / "jobs" / "store"
    for attempt, fail in enumerate(("harbor", "FAIL_ME")):  # the first job fails (moderation)
        config = SimConfig(api_key=sim.SIM_KEY, latency_s=0.2, fail_prompts=fail)
        async with sim.running({"seedance2"}, config=config) as sims, objectstore.running() as st:
            options = RunOptions(
                simulate=True,
                base_urls={"seedance2": sims["seedance2"].base_url},
                api_keys={"seedance2": sim.SIM_KEY},
                overrides={"seedance2": {"poll_min_s": 0.05, "poll_max_s": 0.2}},
                storage_access=access(st),
                retry_failed=attempt > 0,
            )
            result = await execute(manifest, run_dir, options)
            uploaded = st.state.served("PUT")
            fetched = st.state.served("GET")
        assert len(uploaded) == 1, attempt
        assert fetched == uploaded, attempt  # the simulator fetched the image from this store
    rec = result.state.shots["a-s1"]
    assert rec.state == ShotState.DONE, rec.error
