"""The baseline: the script a user writes in ten minutes against RelayDance's HTTP API.

    RELAYDANCE_API_KEY=... python benchmarks/script_baseline.py --base-url URL --shots 200 \
        --slots 20 --poll-s 0.2 --out DIR [--rpm R]

``asyncio.gather`` over the shots; one ``asyncio.Semaphore(slots)`` around submit + poll; a
fixed poll interval (poll, and if not done sleep ``--poll-s``); then the video is downloaded
from the task's ``url`` into ``DIR/<shot>.mp4``. No checkpoint, no retries, no verification, no
fsync: what it lacks is what ``pipeline`` spends its CPU on, so the comparison shows that cost.
It imports nothing from ``pipeline`` (its start-up is aiohttp's only). Prompts are
``bench shot <i>``, as in the manifest ``benchmarks/http_bench.py`` writes, so the fake
provider gives each shot the same latency in both. ``--shots 0`` only starts and exits (its
start-up cost). ``--rpm``: at most that many submits a minute (aiolimiter, evenly spaced).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

MODEL = "doubao-seedance-2-0-720p"


def prompt(i: int) -> str:
    """The prompt of shot ``i`` (the fake provider draws its latency from it)."""
    return f"bench shot {i}"


async def one(
    session: aiohttp.ClientSession,
    base: str,
    i: int,
    sem: asyncio.Semaphore,
    limiter: AsyncLimiter | None,
    poll_s: float,
    out: Path,
) -> None:
    async with sem:
        if limiter is not None:
            await limiter.acquire()
        body = {"model": MODEL, "prompt": prompt(i), "seconds": "5"}
        async with session.post(f"{base}/video/generations", json=body) as resp:
            resp.raise_for_status()
            task_id = (await resp.json())["task_id"]
        while True:
            async with session.get(f"{base}/video/generations/{task_id}") as resp:
                resp.raise_for_status()
                task: dict[str, Any] = await resp.json()
            if task["status"] == "succeeded":
                break
            if task["status"] == "failed":
                raise RuntimeError(f"shot {i} failed: {task}")
            await asyncio.sleep(poll_s)
    async with session.get(task["url"]) as resp:
        resp.raise_for_status()
        (out / f"s{i:06d}.mp4").write_bytes(await resp.read())


async def run(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {os.environ['RELAYDANCE_API_KEY']}"}
    sem = asyncio.Semaphore(args.slots)
    limiter = AsyncLimiter(1, 60.0 / args.rpm) if args.rpm else None
    args.out.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(
            *(
                one(session, args.base_url, i, sem, limiter, args.poll_s, args.out)
                for i in range(args.shots)
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="RelayDance base URL (.../v1)")
    parser.add_argument("--shots", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True, help="jobs in flight at once")
    parser.add_argument("--poll-s", type=float, required=True, help="fixed poll interval")
    parser.add_argument("--out", type=Path, required=True, help="directory for the videos")
    parser.add_argument("--rpm", type=float, help="submits per minute")
    args = parser.parse_args()
    if args.shots:
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
