"""pipeline.providers.urlfetch: the body stream of UrlFetcher.open, whatever its transfer shape."""

from __future__ import annotations

import gzip
import random

from aiohttp import web

from pipeline.providers.urlfetch import CHUNK, UrlFetcher, UrlPolicy
from pipeline.sim.common import serve

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
                if name != "gzipped":  # a gzipped body announces its compressed size
                    assert download.size == (len(BODY) if name == "sized" else None)
                assert all(pieces), name  # no empty pieces (HTTP chunk ends are not data)
                assert b"".join(pieces) == BODY, name
        finally:
            await fetcher.aclose()
