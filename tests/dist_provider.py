"""The benchmark's RelayDance provider (``benchmarks/fake_provider.py``) with fault knobs for
the distributed mode's tests: ``python -m tests.dist_provider --low L --high H --key K
[--submit-delay S] [--fetch-delay F] [--refuse-every N]``.

- ``--submit-delay S``: every submit is held S seconds *before* the simulator creates (and
  charges) the job: a worker killed meanwhile leaves a submit in the air.
- ``--fetch-delay F``: every video download is held F seconds before its bytes are sent.
- ``--refuse-every N``: every N-th submit is answered 429 (Retry-After: 0) and creates
  nothing; ``GET /_test/refused`` lists their times.

``GET /_test/polls`` lists the time of every poll request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
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


def _poll_log(polls: list[float]) -> Any:
    """A middleware: the time of every poll request goes to ``polls`` (``/_test/polls``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/_test/polls":
            return web.json_response(polls)
        if request.match_info.route.name == "poll":
            polls.append(time.time())
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


def _refusing(every: int, refused: list[float]) -> Any:
    """A middleware: every ``every``-th submit is refused with 429 before any job is created;
    the time of each refusal is kept in ``refused`` (served at ``/_test/refused``)."""
    seen = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal seen
        if request.path == "/_test/refused":
            return web.json_response(refused)
        if request.match_info.route.name == "submit":
            seen += 1
            if seen % every == 0:
                refused.append(time.time())
                body = {"error": {"message": "rate limit reached", "type": "rate_limit"}}
                return web.json_response(body, status=429, headers={"Retry-After": "0"})
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
    if args.refuse_every > 0:
        app.middlewares.insert(0, _refusing(args.refuse_every, []))
    app.middlewares.insert(0, _poll_log([]))
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
    parser.add_argument("--refuse-every", type=int, default=0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
