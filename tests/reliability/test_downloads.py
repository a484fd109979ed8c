"""R6 (atomic, verified downloads), R7 (expired URLs refreshed by polling), R14 (no SSRF),
R15 (size caps), against the simulators, a fake provider and hostile servers on loopback."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from pipeline import sim
from pipeline.engine.options import EXIT_ATTENTION, EXIT_OK, RunOptions
from pipeline.engine.runner import execute
from pipeline.errors import FetchError, NotSent
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.providers.urlfetch import UrlFetcher, UrlPolicy
from pipeline.sim.common import FAULTS, LEDGER, Fault, FaultKind, SimConfig, serve
from pipeline.sim.seedance2 import app as seedance2_sim
from tests.fakes import FakeService, clip, fake_spec, padded
from tests.reliability.harness import manifest, options_for, run

SIM = SimConfig(api_key=sim.SIM_KEY, latency_s=0.2)


def _outputs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "shots").glob("*.mp4")) if (run_dir / "shots").exists() else []


async def test_r06_truncated_body_is_retried_and_never_published(tmp_path: Path) -> None:
    path = manifest(tmp_path, "seedance2", 2)
    run_dir = tmp_path / "jobs" / "rel"
    async with sim.running({"seedance2"}, config=SIM) as sims:
        app = sims["seedance2"].app
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE, times=1))
        _, result = await run(path, options_for(sims))
        assert result.exit_code == EXIT_OK  # the cut transfer was fetched again
        app[FAULTS].add(Fault("fetch", FaultKind.TRUNCATE, times=1000))
        path2 = manifest(tmp_path, "seedance2", 2, name="cut")
        _, cut = await run(path2, options_for(sims))
        cut_dir = tmp_path / "jobs" / "cut"
        assert cut.exit_code == EXIT_ATTENTION
        assert {r.state for r in cut.state.shots.values()} == {ShotState.FETCHING}
        assert _outputs(cut_dir) == []  # nothing half-written under a final name
        assert not list(cut_dir.rglob("*.part"))
        app[FAULTS].faults.clear()
        _, resumed = await run(path2, options_for(sims))  # resume: fetch again, never pay again
        assert resumed.exit_code == EXIT_OK
        assert len(app[LEDGER]) == 4
    for out in _outputs(run_dir) + _outputs(cut_dir):
        rec = (result if out.parent.parent == run_dir else resumed).state.shots[out.stem]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == rec.sha256


async def test_r07_expired_url_is_refreshed_by_polling_not_resubmitting(tmp_path: Path) -> None:
    path = manifest(tmp_path, "seedance2", 3)
    async with sim.running({"seedance2"}, config=SIM) as sims:
        app = sims["seedance2"].app
        app[FAULTS].add(Fault("fetch", FaultKind.EXPIRE, times=2))
        _, result = await run(path, options_for(sims))
        polls_after = app[FAULTS].hits["poll"]
        charges = len(app[LEDGER])
        auth_on_downloads = app[seedance2_sim.STATE].fetches_with_auth
    assert result.exit_code == EXIT_OK
    assert charges == 3  # the ledger did not change: no shot was submitted twice
    assert polls_after >= 3 + 2  # the two expired URLs were refreshed by (free) polls
    assert auth_on_downloads == 0  # the API key never reached the download host (R14)


def _fake_run(tmp_path: Path, service: FakeService, extra: str = "") -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: dl\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        + extra
        + "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: one}\n"
    )
    return path


async def test_r15_oversized_result_is_rejected_and_never_resubmitted(tmp_path: Path) -> None:
    service = FakeService()
    registry = {"fake": fake_spec(service)}
    path = _fake_run(tmp_path, service, "downloads: {max_bytes: 64}\n")  # the fake's MP4: ~3 kB
    m = load_manifest(path, registry=registry)
    run_dir = tmp_path / "jobs" / "dl"
    first = await execute(m, run_dir, RunOptions(registry=registry))
    rec = first.state.shots["a-s1"]
    assert rec.state == ShotState.FAILED
    assert (rec.error or "").startswith("download_rejected")
    assert rec.charged == "yes"
    again = await execute(m, run_dir, RunOptions(registry=registry))
    assert again.state.shots["a-s1"].state == ShotState.FAILED
    assert service.ledger == ["a-s1"]  # not resubmitted
    assert _outputs(run_dir) == []
    assert not list(run_dir.rglob("*.part"))


async def test_r06_a_body_that_is_not_a_video_is_rejected(tmp_path: Path) -> None:
    service = FakeService()
    registry = {"fake": fake_spec(service)}
    path = _fake_run(tmp_path, service)
    m = load_manifest(path, registry=registry)

    service.body_override = b"<html><body>502 Bad Gateway</body></html>" * 4
    result = await execute(m, tmp_path / "jobs" / "dl", RunOptions(registry=registry))
    rec = result.state.shots["a-s1"]
    assert rec.state == ShotState.FAILED
    assert "not an MP4" in (rec.error or "")
    assert _outputs(tmp_path / "jobs" / "dl") == []


# ----- hostile download hosts (R14, R15) ----------------------------------------------------


class Canary:
    """A loopback server that must never be reached."""

    def __init__(self) -> None:
        self.hits = 0

    def app(self) -> web.Application:
        async def any_path(request: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(body=b"secret")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_path)
        return app


@pytest.fixture
async def canary() -> AsyncIterator[tuple[Canary, str]]:
    c = Canary()
    async with serve(c.app()) as origin:
        yield c, origin


async def _open(fetcher: UrlFetcher, url: str) -> bytes:
    async with fetcher.open(url) as download:
        return b"".join([chunk async for chunk in download.chunks])


async def test_r14_result_urls_cannot_reach_private_or_local_hosts(
    canary: tuple[Canary, str],
) -> None:
    hits, origin = canary
    port = origin.rsplit(":", 1)[1]

    async def to_private(host: str, port: int) -> list[str]:
        return ["10.0.0.1"]

    redirector = web.Application()

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{origin}/stolen")

    redirector.router.add_get("/video.mp4", hop)
    async with serve(redirector) as redirect_origin:
        trusted = redirect_origin.split("//")[1]  # the redirector is trusted, the canary is not
        fetcher = UrlFetcher(UrlPolicy(allow_hosts={trusted}), provider="test")
        private = UrlFetcher(UrlPolicy(resolver=to_private), provider="test")
        try:
            for url in (
                "file:///etc/passwd",
                "http://169.254.169.254/latest/meta-data/",
                "https://169.254.169.254/latest/meta-data/",
                f"http://127.0.0.1:{port}/x",
                f"https://127.0.0.1:{port}/x",
                "ftp://example.com/video.mp4",
                f"{redirect_origin}/video.mp4",  # 302 to the canary: the hop is checked too
            ):
                with pytest.raises(FetchError) as info:
                    await _open(fetcher, url)
                assert info.value.rejected, url
            with pytest.raises(FetchError, match=r"non-public address 10\.0\.0\.1"):
                await _open(private, "https://cdn.example.com/video.mp4")
        finally:
            await fetcher.aclose()
            await private.aclose()
    assert hits.hits == 0


async def test_r14_dns_rebinding_is_refused_at_connect_time(canary: tuple[Canary, str]) -> None:
    hits, origin = canary
    port = int(origin.rsplit(":", 1)[1])
    answers = [["93.184.216.34"], ["127.0.0.1"]]  # public when checked, loopback when connecting

    async def rebinding(host: str, _port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    fetcher = UrlFetcher(UrlPolicy(resolver=rebinding), provider="test")
    try:
        with pytest.raises((NotSent, FetchError)):
            await _open(fetcher, f"https://rebind.example:{port}/video.mp4")
    finally:
        await fetcher.aclose()
    assert hits.hits == 0


async def test_r15_caps_hold_on_declared_streamed_and_decoded_sizes(tmp_path: Path) -> None:
    cap = 64 * 1024
    big = b"\x00\x00\x00\x18ftypisom" + b"\x00" * (4 * cap)

    async def declared(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(10 * cap)})
        await resp.prepare(request)
        await resp.write(big[:1024])
        return resp

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 8192):
            await resp.write(big[i : i + 8192])
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(big)
        assert len(body) < cap  # small on the wire, large once decoded
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/declared.mp4", declared)
    app.router.add_get("/streamed.mp4", streamed)
    app.router.add_get("/gzipped.mp4", gzipped)
    from pipeline.transfer.download import write_verified

    async with serve(app) as origin:
        host = origin.split("//")[1]
        fetcher = UrlFetcher(UrlPolicy(allow_hosts={host}, max_bytes=cap), provider="test")
        try:
            with pytest.raises(FetchError, match="above the cap") as info:
                await _open(fetcher, f"{origin}/declared.mp4")  # refused before the body
            assert info.value.rejected

            async def record(_: object, publish: object) -> None:
                raise AssertionError("must not be recorded")

            for name in ("streamed", "gzipped"):
                final = tmp_path / f"{name}.mp4"
                async with fetcher.open(f"{origin}/{name}.mp4") as download:
                    with pytest.raises(FetchError, match="exceeds the cap") as info:
                        await write_verified(download, final, max_bytes=cap, record=record)
                assert info.value.rejected
                assert not final.exists()
                assert not final.with_name(final.name + ".part").exists()
        finally:
            await fetcher.aclose()


async def test_r06_large_bodies_are_hashed_and_written_in_order(tmp_path: Path) -> None:
    from pipeline.models import Artifact, Download
    from pipeline.transfer.download import write_verified
    from pipeline.transfer.playable import Expected

    # a real 2 s clip grown by a ``free`` box of noise: large, and still a playable video
    body = padded(clip(2), 13 * 1024 * 1024 + 17, seed=3)
    recorded: list[Artifact] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async def record(art: Artifact, publish: Callable[[], None]) -> None:
        assert not (tmp_path / "big.mp4").exists()  # recorded before it is published
        recorded.append(art)

    final = tmp_path / "big.mp4"
    art = await write_verified(
        Download(chunks(), size=len(body)),
        final,
        max_bytes=len(body),
        record=record,
        expect=Expected(2, "fake"),
    )
    assert final.read_bytes() == body
    assert art.sha256 == hashlib.sha256(body).hexdigest() == recorded[0].sha256
    assert not (tmp_path / "big.mp4.part").exists()

    async def cut() -> AsyncIterator[bytes]:  # the transfer breaks after 9 MB
        for i in range(0, 9 * 1024 * 1024, 65536):
            yield body[i : i + 65536]
        raise FetchError("connection reset mid-body")

    with pytest.raises(FetchError, match="reset"):
        await write_verified(
            Download(cut(), size=len(body)),
            tmp_path / "cut.mp4",
            max_bytes=len(body),
            record=record,
        )
    assert not (tmp_path / "cut.mp4").exists()
    assert not (tmp_path / "cut.mp4.part").exists()
