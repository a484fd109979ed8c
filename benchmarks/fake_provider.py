"""A RelayDance-shaped provider in its own process, for ``benchmarks/http_bench.py``.

    python -m benchmarks.fake_provider --low 2 --high 10 --seed 7 --key KEY

It serves :mod:`pipeline.sim.relaydance` (the protocol-faithful simulator the adapter's tests
use: same routes, JSON, auth, signed result URLs) on 127.0.0.1 at a free port, prints one JSON
line ``{"origin", "base_url"}`` once it listens, and stops on SIGTERM or SIGINT.

Why it is a fair provider to benchmark against:

- **Its own process**, over HTTP on loopback: clients pay for connections, JSON, the event loop
  and their own start-up, as against the real service; the server's CPU is not theirs.
- **Time-based latencies, no oracle.** Each job succeeds ``latency`` wall-clock seconds after
  its submit, whoever polls and however often; ``latency`` is drawn uniformly from
  [``--low``, ``--high``], seeded by ``--seed`` and the job's prompt, so every client gets the
  same latency for the same shot, in any submit order. A poll answers the documented task JSON
  (``status``, and ``url`` once it succeeded): no ETA, no progress, nothing that says when to
  ask again.

``GET /_bench/stats`` answers what the provider saw, per job: ``prompt``, ``latency_s``,
``submitted`` (Unix time the task was created), ``done_at`` (when it succeeded), ``polls``
(status requests for it), ``seen_done`` (the first poll that answered ``succeeded``),
``fetches`` and ``fetched`` (the last video answered 200); plus requests per route and status,
and the server's own CPU seconds. Those times come from this process's clock only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from pipeline.sim.common import SimConfig, clip, serve
from pipeline.sim.relaydance import app as relaydance

#: Route names (``pipeline.sim.relaydance.app``) that answer a video's bytes.
VIDEO_ROUTES = frozenset({"fetch", "content"})


@dataclass(slots=True)
class JobStats:
    """What the provider saw of one job (times are Unix seconds of this process)."""

    task_id: str
    prompt: str
    latency_s: float
    submitted: float
    done_at: float
    polls: int = 0
    seen_done: float | None = None
    fetches: int = 0
    fetched: float | None = None


@dataclass
class BenchStats:
    """Every job, and every request by route name and HTTP status."""

    jobs: dict[str, JobStats] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        """The ``/_bench/stats`` answer."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "jobs": [asdict(j) for j in self.jobs.values()],
            "requests": dict(self.requests),
            "server_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        }


STATS = web.AppKey("bench_stats", BenchStats)


def _record(app: web.Application, route: str, task_id: str, status: int, now: float) -> None:
    stats, state = app[STATS], app[relaydance.STATE]
    if route == "submit" and status == 200:
        job = state.jobs[task_id]
        created, latency = job.timeline.created, job.timeline.latency_s
        stats.jobs[task_id] = JobStats(task_id, job.prompt, latency, created, created + latency)
        return
    seen = stats.jobs.get(task_id)
    if seen is None or status != 200:
        return
    if route == "poll":
        seen.polls += 1
        if seen.seen_done is None and now >= seen.done_at:
            seen.seen_done = now
    elif route in VIDEO_ROUTES:
        seen.fetches += 1
        seen.fetched = now


@web.middleware
async def _counting(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count each request; note submits, polls and fetches per job."""
    response: web.StreamResponse = await handler(request)
    now = time.time()
    route = request.match_info.route.name or ""
    request.app[STATS].requests[f"{route} {response.status}"] += 1
    task_id = request.match_info.get("task_id", "")
    if route == "submit" and isinstance(response, web.Response) and response.status == 200:
        task_id = json.loads(response.body if isinstance(response.body, bytes) else b"{}")[
            "task_id"
        ]
    _record(request.app, route, task_id, response.status, now)
    return response


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS].as_json())


def make_app(config: SimConfig) -> web.Application:
    """The RelayDance simulator with the counting middleware and ``GET /_bench/stats``."""
    app = relaydance.make_app(config)
    app[STATS] = BenchStats()
    app.middlewares.append(_counting)
    app.router.add_get("/_bench/stats", _stats, name="bench-stats")
    return app


async def _serve(args: argparse.Namespace) -> None:
    config = SimConfig(
        api_key=args.key,
        latency_s=args.low,
        latency_max_s=args.high,
        latency_seed=args.seed,
    )
    clip(5, "16:9", "relaydance")  # render the (cached) result video before the clock starts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(make_app(config)) as origin:
        ready = {"origin": origin, "base_url": origin + relaydance.BASE_PATH}
        print(json.dumps(ready), flush=True)
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--low", type=float, required=True, help="shortest job, seconds")
    parser.add_argument("--high", type=float, required=True, help="longest job, seconds")
    parser.add_argument("--seed", type=int, default=7, help="seed of the latency draws")
    parser.add_argument("--key", default="bench-key", help="the only API key accepted")
    asyncio.run(_serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
