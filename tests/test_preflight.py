"""Preflight against the real simulators and a real S3 API (moto) on loopback, and the clear
storage errors of the upload path (missing credentials, stopped endpoint, missing bucket)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from pipeline import sim
from pipeline.engine.preflight import PreflightProblem, preflight, render_problems
from pipeline.errors import NotSent, Rejected
from pipeline.manifest.loader import Manifest, load_manifest
from pipeline.models import Asset, MediaRole
from pipeline.providers.base import UPLOAD
from pipeline.settings import StorageSettings
from pipeline.sim.common import LEDGER
from pipeline.transfer.storage import ObjectStorage, StorageError
from pipeline.transfer.upload import MediaResolver
from tests.conftest import S3, tiny_png

NAMES = ("newapi", "relaydance", "seedance2", "venice")
ENVS = {n: f"{n.upper()}_API_KEY" for n in NAMES}

TEXT_SHOTS = """\
scenes:
  - id: sc
    shots:
      - {id: v, provider: venice, model: grok-imagine-text-to-video-private, duration: 6,
         prompt: a lighthouse at night}
      - {id: d, provider: seedance2, model: seedance-2.0, duration: 5, prompt: dawn harbour}
      - {id: n, provider: newapi, model: viduq3p-720p, duration: 4, prompt: market street}
      - {id: r, provider: relaydance, model: doubao-seedance-2-0-720p, duration: 5,
         prompt: cabin by candlelight}
"""


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def load(tmp_path: Path, body: str, storage: str = "") -> Manifest:
    path = tmp_path / "pf.yaml"
    head = "version: 1\nname: pf\nproviders: {newapi: {base_url: 'https://gateway.example.com'}}\n"
    path.write_text(head + storage + body)
    return load_manifest(path)


def image_shot_manifest(tmp_path: Path, storage: str) -> Manifest:
    """One seedance2 shot with a local image: seedance2 takes URLs only, so it needs storage."""
    tiny_png(tmp_path / "frame.png")
    body = (
        "scenes:\n  - id: sc\n    shots:\n"
        "      - {id: d, provider: seedance2, model: seedance-2.0, duration: 5, "
        "prompt: dawn, image: frame.png}\n"
    )
    return load(tmp_path, body, storage)


def clear_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_all_good_means_no_problems_and_nothing_charged(tmp_path: Path) -> None:
    manifest = load(tmp_path, TEXT_SHOTS)
    async with sim.running(NAMES) as sims:
        problems = await preflight(
            manifest,
            api_keys=dict.fromkeys(NAMES, sim.SIM_KEY),
            base_urls={n: r.base_url for n, r in sims.items()},
            simulate=True,
        )
        assert problems == []
        assert all(len(r.app[LEDGER]) == 0 for r in sims.values())
    assert render_problems(problems) == "preflight: ok"


async def test_wrong_key_is_an_auth_problem_naming_the_variable(tmp_path: Path) -> None:
    manifest = load(tmp_path, TEXT_SHOTS)
    wrong = "sk-wrong-0123456789"
    async with sim.running(NAMES) as sims:
        problems = await preflight(
            manifest,
            api_keys=dict.fromkeys(NAMES, wrong),
            base_urls={n: r.base_url for n, r in sims.items()},
            simulate=True,
        )
    assert [p.subject for p in problems] == sorted(NAMES)
    for p in problems:
        assert p.kind == "auth", p
        assert ENVS[p.subject] in p.message
        assert "401" in p.message
        assert wrong not in str(p)
    assert wrong not in render_problems(problems)


async def test_missing_key_is_reported_without_contacting_anyone(tmp_path: Path) -> None:
    manifest = load(tmp_path, TEXT_SHOTS)
    port = dead_port()
    problems = await preflight(
        manifest,
        api_keys={"venice": "k-venice-123"},
        base_urls=dict.fromkeys(NAMES, f"http://127.0.0.1:{port}/api/v1"),
    )
    by = {p.subject: p for p in problems}
    assert set(by) == set(NAMES)
    assert by["venice"].kind == "unreachable"
    for name in ("newapi", "relaydance", "seedance2"):
        assert by[name] == PreflightProblem(
            name,
            "auth",
            f"{ENVS[name]} is not set",
            f"export {ENVS[name]}=<key> (or rehearse with --simulate)",
        )


async def test_nothing_listening_is_unreachable_naming_host_and_port(tmp_path: Path) -> None:
    manifest = load(tmp_path, TEXT_SHOTS)
    port = dead_port()
    problems = await preflight(
        manifest,
        api_keys=dict.fromkeys(NAMES, "k-123456"),
        base_urls=dict.fromkeys(NAMES, f"http://127.0.0.1:{port}/v1"),
        timeout_s=2.0,
    )
    assert [p.subject for p in problems] == sorted(NAMES)
    for p in problems:
        assert p.kind == "unreachable", p
        assert f"127.0.0.1:{port}" in p.message
        assert "k-123456" not in str(p)
    text = render_problems(problems)
    assert text.startswith("preflight: 4 problems")
    assert f"could not connect to http://127.0.0.1:{port}" in text


async def test_wrong_base_path_is_a_config_problem(tmp_path: Path) -> None:
    venice_only = TEXT_SHOTS.split("      - {id: d")[0]
    manifest = load(tmp_path, venice_only)
    async with sim.running(["venice"]) as sims:
        origin = sims["venice"].base_url.removesuffix("/api/v1")  # the /api/v1 left out
        problems = await preflight(
            manifest, api_keys={"venice": sim.SIM_KEY}, base_urls={"venice": origin}
        )
    (problem,) = problems
    assert (problem.subject, problem.kind) == ("venice", "config")
    assert f"POST {origin}/video/quote answered HTTP 404" in problem.message
    assert "providers.venice.base_url" in problem.hint


async def test_storage_roundtrip_leaves_nothing_behind(tmp_path: Path, s3: S3) -> None:
    manifest = image_shot_manifest(tmp_path, s3.storage_yaml())
    async with sim.running(["seedance2"]) as sims:
        problems = await preflight(
            manifest,
            api_keys={"seedance2": sim.SIM_KEY},
            base_urls={"seedance2": sims["seedance2"].base_url},
            simulate=True,
        )
    assert problems == []
    puts = s3.requests("PUT")
    assert len(puts) == 1
    assert "/media/.pipeline-preflight-" in puts[0]
    assert s3.keys() == []  # written, read back and deleted


async def test_storage_without_credentials_names_the_variables(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_aws(monkeypatch)
    storage = f"storage: {{url: 's3://nobody/media', endpoint_url: '{moto_endpoint}'}}\n"
    manifest = image_shot_manifest(tmp_path, storage)
    async with sim.running(["seedance2"]) as sims:
        problems = await preflight(
            manifest,
            api_keys={"seedance2": sim.SIM_KEY},
            base_urls={"seedance2": sims["seedance2"].base_url},
            simulate=True,
        )
    (problem,) = problems
    assert problem.subject == "storage"
    assert problem.kind == "auth"
    assert "s3://nobody/media" in problem.message
    assert "AWS_ACCESS_KEY_ID" in problem.hint
    assert "AWS_SECRET_ACCESS_KEY" in problem.hint
    text = render_problems(problems)
    assert "169.254" not in text
    assert "Traceback" not in text
    assert len(text.splitlines()) == 3


async def test_stopped_storage_endpoint_is_unreachable(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = dead_port()
    storage = (
        f"storage: {{url: 's3://{s3.bucket}/media', endpoint_url: 'http://127.0.0.1:{port}'}}\n"
    )
    manifest = image_shot_manifest(tmp_path, storage)
    async with sim.running(["seedance2"]) as sims:
        problems = await preflight(
            manifest,
            api_keys={"seedance2": sim.SIM_KEY},
            base_urls={"seedance2": sims["seedance2"].base_url},
            timeout_s=3.0,
        )
    (problem,) = problems
    assert (problem.subject, problem.kind) == ("storage", "unreachable")
    assert f"127.0.0.1:{port}" in problem.message
    assert "connection refused" in problem.message
    assert "storage.endpoint_url" in problem.hint


async def test_missing_bucket_is_a_config_problem(tmp_path: Path, s3: S3) -> None:
    storage = s3.storage_yaml().replace(s3.bucket, "no-such-bucket-here")
    manifest = image_shot_manifest(tmp_path, storage)
    async with sim.running(["seedance2"]) as sims:
        problems = await preflight(
            manifest,
            api_keys={"seedance2": sim.SIM_KEY},
            base_urls={"seedance2": sims["seedance2"].base_url},
        )
    (problem,) = problems
    assert (problem.subject, problem.kind) == ("storage", "config")
    assert "'no-such-bucket-here' does not exist" in problem.message


async def test_storage_is_not_checked_when_no_shot_uploads(tmp_path: Path) -> None:
    port = dead_port()
    storage = f"storage: {{url: 's3://b/media', endpoint_url: 'http://127.0.0.1:{port}'}}\n"
    manifest = load(tmp_path, TEXT_SHOTS, storage)
    async with sim.running(NAMES) as sims:
        problems = await preflight(
            manifest,
            api_keys=dict.fromkeys(NAMES, sim.SIM_KEY),
            base_urls={n: r.base_url for n, r in sims.items()},
        )
    assert problems == []


# ----- the upload path: storage failures as the project's errors, one clear line ----------------


def png_asset(tmp_path: Path) -> Asset:
    path = tmp_path / "frame.png"
    tiny_png(path)
    data = path.read_bytes()
    return Asset(
        role=MediaRole.IMAGE,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mime="image/png",
    )


async def test_upload_without_credentials_is_rejected_clearly(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_aws(monkeypatch)
    settings = StorageSettings(url=f"s3://{s3.bucket}/media", endpoint_url=s3.endpoint)
    resolver = MediaResolver(storage=ObjectStorage(settings))
    with pytest.raises(Rejected) as caught:
        await resolver.resolve(png_asset(tmp_path), UPLOAD)
    text = str(caught.value)
    assert f"s3://{s3.bucket}/media" in text
    assert "AWS_ACCESS_KEY_ID" in text
    assert "AWS_SECRET_ACCESS_KEY" in text
    assert "169.254" not in text
    assert "\n" not in text
    assert s3.requests("HEAD") == []  # refused before any request


async def test_upload_to_a_stopped_endpoint_is_not_sent_naming_it(tmp_path: Path, s3: S3) -> None:
    port = dead_port()
    settings = StorageSettings(
        url=f"s3://{s3.bucket}/media", endpoint_url=f"http://127.0.0.1:{port}"
    )
    resolver = MediaResolver(storage=ObjectStorage(settings, max_retries=0))
    with pytest.raises(NotSent) as caught:
        await resolver.resolve(png_asset(tmp_path), UPLOAD)
    text = str(caught.value)
    assert f"cannot reach http://127.0.0.1:{port} (connection refused)" in text
    assert "storage.endpoint_url" in text
    assert "\n" not in text


def test_partial_static_keys_name_the_missing_one() -> None:
    settings = StorageSettings(url="s3://b/p", endpoint_url="http://127.0.0.1:1")
    store = ObjectStorage(settings, environ={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"})
    assert store.missing == "AWS_SECRET_ACCESS_KEY is not set (only AWS_ACCESS_KEY_ID is)"
    assert ObjectStorage(settings, environ={"AWS_METADATA_ENDPOINT": "http://x"}).missing is None


async def test_sign_without_credentials_raises_storage_error() -> None:
    settings = StorageSettings(url="s3://b/p", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(StorageError) as caught:
        await ObjectStorage(settings, environ={}).sign("x.png")
    assert caught.value.kind == "credentials"
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("text", "kind", "retryable"),
    [
        (
            "Generic S3 error: Error performing PUT http://h:1/b/p/x in 2ms - Server returned "
            "non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code>",
            "denied",
            False,
        ),
        (
            "Generic S3 error: Received redirect without LOCATION, this normally indicates an "
            "incorrectly configured region",
            "region",
            False,
        ),
        (
            "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1ms",
            "credentials",
            False,
        ),
        (
            "Generic S3 error: Error performing GET http://h:1/b/x in 403ms - Server returned "
            "non-2xx status code: 503 Service Unavailable\n\nretry_timeout: 180s",
            "unreachable",
            True,
        ),
        (
            "Generic S3 error: Error performing GET http://h:1/b/x?X-Amz-Signature=abc in 403ms - "
            "Server returned non-2xx status code: 400 Bad Request\n\nretry_timeout: 180s",
            "other",
            False,
        ),
    ],
)
def test_obstore_failures_are_classified(text: str, kind: str, retryable: bool) -> None:
    store = ObjectStorage(StorageSettings(url="s3://b/p"), environ={})
    error = store.error("PUT", "x.png", RuntimeError(text))
    assert (error.kind, error.retryable) == (kind, retryable)
    assert "\n" not in str(error)
    assert "169.254" not in str(error)
    assert "X-Amz-Signature" not in str(error)
    assert str(error).startswith("object storage s3://b/p")


async def test_other_adapters_are_asked_through_their_probe(tmp_path: Path) -> None:
    from tests.fakes import FakeService, fake_spec

    service = FakeService()
    registry = {"fake": fake_spec(service)}
    path = tmp_path / "fake.yaml"
    path.write_text(
        "version: 1\nname: f\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        "scenes:\n  - id: sc\n    shots:\n      - {id: s0, prompt: p}\n"
    )
    manifest = load_manifest(path, registry=registry)
    assert await preflight(manifest, api_keys={}, registry=registry) == []
    service.healthy = False
    (problem,) = await preflight(manifest, api_keys={}, registry=registry)
    assert (problem.subject, problem.kind) == ("fake", "unreachable")
    assert "HTTP 503" in problem.message
    assert service.calls == ["probe", "probe"]
    assert service.submits == 0
