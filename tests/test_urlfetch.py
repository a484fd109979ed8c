"""pipeline.providers.urlfetch: the body stream of UrlFetcher.open, whatever its transfer shape."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.errors import Ambiguous
from pipeline.models import Artifact
from pipeline.providers.urlfetch import CHUNK, UrlFetcher, UrlPolicy
from pipeline.sim.common import serve
from pipeline.transfer.download import write_verified

BODY = random.Random(5).randbytes(3 * CHUNK + 12345)


async def _sized(request: web.Request) -> web.Response:
    return web.Response(body=BODY)


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(0, 256 * 1024, 997):  # tiny HTTP chunks, then large writes
        await resp.write(BODY[i : min(i + 997, 256 * 1024)])
    for i in range(256 * 1024, len(BODY), 300_000):
        await resp.write(BODY[i : i + 300_000])
    return resp


async def _gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(BODY), headers={"Content-Encoding": "gzip"})


async def test_the_body_arrives_whole_and_in_order_whatever_its_transfer_shape() -> None:
    app = web.Application()
    app.router.add_get("/sized.mp4", _sized)
    app.router.add_get("/chunked.mp4", _chunked)
    app.router.add_get("/gzipped.mp4", _gzipped)
    async with serve(app) as origin:
        fetcher = UrlFetcher(UrlPolicy(allow_hosts={origin.split("//")[1]}), provider="test")
        try:
            for name in ("sized", "chunked", "gzipped"):
                async with fetcher.open(f"{origin}/{name}.mp4") as download:
                    pieces = [piece async for piece in download.chunks]
                # a gzipped body's Content-Length counts its compressed bytes: unknown size
                assert download.size == (len(BODY) if name == "sized" else None), name
                assert all(pieces), name  # no empty pieces (HTTP chunk ends are not data)
                assert b"".join(pieces) == BODY, name
        finally:
            await fetcher.aclose()


#: A video-looking body (``ftyp`` at offset 4) that compresses well, as a CDN might gzip it.
VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4000


async def _gzip_video(request: web.Request) -> web.StreamResponse:
    packed = gzip.compress(VIDEO)
    headers = {"Content-Encoding": "gzip", "Content-Type": "video/mp4"}
    if request.query.get("cut"):  # announce the whole, send 60 %, then drop the connection
        resp = web.StreamResponse(headers={**headers, "Content-Length": str(len(packed))})
        await resp.prepare(request)
        await resp.write(packed[: len(packed) * 6 // 10])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp
    return web.Response(body=packed, headers=headers)  # with its (compressed) Content-Length


async def _publish(_: Artifact, publish: Callable[[], None]) -> None:
    publish()


async def test_a_gzip_encoded_video_with_content_length_is_fetched_and_a_cut_one_refused(
    tmp_path: Path,
) -> None:
    app = web.Application()
    app.router.add_get("/v.mp4", _gzip_video)
    async with serve(app) as origin:
        fetcher = UrlFetcher(UrlPolicy(allow_hosts={origin.split("//")[1]}), provider="test")
        try:
            final = tmp_path / "whole.mp4"
            async with fetcher.open(f"{origin}/v.mp4") as download:
                art = await write_verified(download, final, max_bytes=10**7, record=_publish)
            assert final.read_bytes() == VIDEO
            assert (art.size, art.sha256) == (len(VIDEO), hashlib.sha256(VIDEO).hexdigest())

            cut = tmp_path / "cut.mp4"
            with pytest.raises(Ambiguous, match=r"(?i)not enough data"):  # retried like any cut
                async with fetcher.open(f"{origin}/v.mp4?cut=1") as download:
                    await write_verified(download, cut, max_bytes=10**7, record=_publish)
            assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.mp4"]  # no part left
        finally:
            await fetcher.aclose()
