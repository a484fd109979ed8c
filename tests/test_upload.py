"""The upload stage against a real S3 API (moto server on loopback): dedupe, resume, re-signing."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.engine.options import EXIT_OK, RunOptions, RunResult
from pipeline.engine.runner import execute
from pipeline.errors import ManifestError
from pipeline.journal.checkpoint import FILE, encode, parse
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event
from pipeline.providers.base import MediaPolicy, ProviderSpec
from tests.conftest import S3, tiny_png
from tests.fakes import FakeService, fake_spec

NO_INLINE = MediaPolicy()


def manifest(tmp_path: Path, s3: S3, name: str, shots: int = 5) -> Path:
    tiny_png(tmp_path / "frame.png")
    lines = [
        "version: 1",
        f"name: {name}",
        "defaults: {provider: fake, model: m1, duration: 2}",
        s3.storage_yaml().rstrip(),
        "scenes:",
        "  - id: sc",
        "    shots:",
    ]
    lines += [f"      - {{id: s{i}, prompt: 'shot {i}', image: frame.png}}" for i in range(shots)]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run(
    path: Path, service: FakeService, policy: MediaPolicy = NO_INLINE, *, simulate: bool = True
) -> RunResult:
    """Run on the fake provider. ``simulate``: moto serves plain http on loopback, which only a
    rehearsal may hand to providers."""
    registry: Mapping[str, ProviderSpec] = {"fake": fake_spec(service, media=policy)}
    m = load_manifest(path, registry=registry)
    options = RunOptions(registry=registry, simulate=simulate)
    return await execute(m, path.parent / "jobs" / m.name, options)


async def test_plain_http_storage_is_refused_outside_a_rehearsal(tmp_path: Path, s3: S3) -> None:
    service = FakeService()
    with pytest.raises(ManifestError, match="plain http"):
        await run(manifest(tmp_path, s3, "real"), service, simulate=False)
    assert service.submits == 0
    assert s3.requests("PUT") == []


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


async def test_one_image_for_five_shots_in_two_runs_is_put_once(tmp_path: Path, s3: S3) -> None:
    service = FakeService()
    first = await run(manifest(tmp_path, s3, "run-a"), service)
    second = await run(manifest(tmp_path, s3, "run-b"), service)
    assert first.exit_code == second.exit_code == EXIT_OK
    puts = s3.requests("PUT")
    assert len(puts) == 1, puts
    assert len(s3.keys()) == 1
    assert s3.keys()[0].startswith("media/")
    assert s3.keys()[0].endswith(".png")
    png = (tmp_path / "frame.png").read_bytes()
    assert len(service.media) == 10
    for media in service.media:
        ((role, url),) = media
        assert role == "image"
        assert url.startswith(s3.endpoint)
        assert "X-Amz-Signature=" in url
        assert fetch(url) == png  # the presigned URL really serves the file


def _cut_after_uploads(run_dir: Path, expire: bool) -> None:
    """Leave the log as a crash between upload and submit would (optionally with expired URLs)."""
    log = run_dir / FILE
    records = parse(log.read_bytes()).records
    last = max(i for i, r in enumerate(records) if r.ev == Event.UPLOADED)
    kept = []
    for rec in records[: last + 1]:
        if expire and rec.ev == Event.UPLOADED:
            rec = type(rec)(rec.seq, rec.ts, rec.ev, rec.shot, {**rec.data, "expires_at": 1.0})
        kept.append(encode(rec))
    log.write_bytes(b"".join(kept))
    # Nothing was fetched before such a crash: no videos (or their sidecars) in shots/.
    for path in (run_dir / "shots").glob("*.*"):
        path.unlink()


async def test_resume_after_upload_reuses_the_object(tmp_path: Path, s3: S3) -> None:
    path = manifest(tmp_path, s3, "resume", shots=3)
    service = FakeService()
    await run(path, service)
    _cut_after_uploads(tmp_path / "jobs" / "resume", expire=False)
    heads_before = len(s3.requests("HEAD"))
    urls_before = {url for media in service.media for _, url in media}
    service.media.clear()
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert len(s3.requests("PUT")) == 1
    assert len(s3.requests("HEAD")) == heads_before  # recorded URLs were reused as they are
    assert {url for media in service.media for _, url in media} <= urls_before


async def test_expired_presigned_url_is_resigned_not_reuploaded(tmp_path: Path, s3: S3) -> None:
    path = manifest(tmp_path, s3, "expired", shots=2)
    service = FakeService()
    await run(path, service)
    _cut_after_uploads(tmp_path / "jobs" / "expired", expire=True)
    heads_before = len(s3.requests("HEAD"))
    service.media.clear()
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert len(s3.requests("PUT")) == 1  # never uploaded again
    assert len(s3.requests("HEAD")) == heads_before + 1  # checked once (single flight), re-signed
    new = {url for media in service.media for _, url in media}
    assert len(new) == 1
    png = (tmp_path / "frame.png").read_bytes()
    assert all(fetch(url) == png for url in new)


async def test_large_media_go_to_storage_when_inline_would_be_too_big(
    tmp_path: Path, s3: S3
) -> None:
    path = manifest(tmp_path, s3, "big", shots=1)
    service = FakeService()
    small_limit = MediaPolicy(data_urls=True, max_inline_bytes=50)  # the png is ~100 bytes
    result = await run(path, service, small_limit)
    assert result.exit_code == EXIT_OK
    ((_, url),) = service.media[0]
    assert url.startswith(s3.endpoint)
    big_limit = MediaPolicy(data_urls=True, max_inline_bytes=1 << 20)
    path2 = manifest(tmp_path, s3, "small", shots=1)
    await run(path2, service, big_limit)
    ((_, url2),) = service.media[1]
    assert url2.startswith("data:image/png;base64,")
