"""The benchmark's RelayDance provider (``benchmarks/fake_provider.py``) with an optional slow
submit and slow downloads, for the distributed mode's tests: ``python -m tests.dist_provider
--low L --high H --key K [--submit-delay S] [--fetch-delay F]``. With a submit delay, every
submit is held S seconds *before* the simulator creates (and charges) the job: a worker killed
meanwhile leaves a submit in the air. With a fetch delay, every video download is held F
seconds before its bytes are sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from aiohttp import web

from benchmarks import fake_provider
from pipeline.sim.common import SimConfig, clip, serve
from pipeline.sim.relaydance import app as relaydance


def _slow_fetch(delay_s: float) -> Any:
    """A middleware: a video download waits ``delay_s`` seconds before it is answered."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.name in ("content", "fetch"):
            await asyncio.sleep(delay_s)
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


def _slow_submit(delay_s: float) -> Any:
    """A middleware: a submit's whole body is received, then held ``delay_s`` seconds, then
    handled (the job created and charged) even if the client has gone away meanwhile."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.name == "submit":
            await request.read()  # the request has fully arrived: the provider has it
            await asyncio.sleep(delay_s)
            return await asyncio.shield(handler(request))
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


async def _serve(args: argparse.Namespace) -> None:
    config = SimConfig(
        api_key=args.key, latency_s=args.low, latency_max_s=args.high, latency_seed=7
    )
    clip(4, "16:9", "relaydance")
    app = fake_provider.make_app(config)
    if args.submit_delay > 0:
        app.middlewares.insert(0, _slow_submit(args.submit_delay))
    if args.fetch_delay > 0:
        app.middlewares.insert(0, _slow_fetch(args.fetch_delay))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(app) as origin:
        print(json.dumps({"origin": origin, "base_url": origin + relaydance.BASE_PATH}), flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--low", type=float, required=True)
    parser.add_argument("--high", type=float, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--submit-delay", type=float, default=0.0)
    parser.add_argument("--fetch-delay", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
