"""The trade between polls and lateness: the learned schedule against evenly spaced polls.

    python benchmarks/poll_tradeoff.py [--jobs 3000] [--low 20] [--high 100]

No provider, no clock: each of ``--jobs`` jobs (latency uniform in [low, high] s) is followed
poll by poll on ``engine.pollsched`` with a history of 200 completion times from the same
spread, for several values of ``BETA``; then on evenly spaced polls (first at ``low``). Prints
one line each: mean polls a job and mean seconds from the job's end to the poll that saw it.
The README's "Performance" section quotes it: no schedule without a hint from the provider
finds jobs much sooner for the same polls.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from pipeline.engine import pollsched
from pipeline.engine.pollsched import CompletionTimes, first_delay, next_delay
from pipeline.settings import PollPolicy

BETAS = (0.008, 0.005, 0.0045, 0.004, 0.003, 0.002)


def learned(latency: float, times: CompletionTimes, policy: PollPolicy) -> tuple[int, float]:
    """(polls, seconds late) of one job followed on the learned schedule."""
    t = first_delay(0.0, times, policy)
    wait, polls = policy.min_s, 0
    while True:
        polls += 1
        if t >= latency:
            return polls, t - latency
        wait = next_delay(t, wait, times, policy, policy.min_s)
        t += wait


def evenly(latency: float, first: float, every: float) -> tuple[int, float]:
    """(polls, seconds late) with a poll at ``first`` s and then every ``every`` s."""
    extra = max(0, math.ceil((latency - first) / every))
    return 1 + extra, first + extra * every - latency


def _line(polls: tuple[int, ...], late: tuple[float, ...]) -> str:
    return f"polls {statistics.mean(polls):5.2f}  late {statistics.mean(late):5.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--low", type=float, default=20.0)
    parser.add_argument("--high", type=float, default=100.0)
    args = parser.parse_args()
    policy = PollPolicy(min_s=args.low / 10, max_s=args.high / 3, deadline_s=36000.0)
    rng = random.Random(1)
    times = CompletionTimes(rng.uniform(args.low, args.high) for _ in range(200))
    jobs = [rng.uniform(args.low, args.high) for _ in range(args.jobs)]
    for beta in BETAS:
        pollsched.BETA = beta
        random.seed(3)
        polls, late = zip(*(learned(x, times, policy) for x in jobs), strict=True)
        print(f"learned BETA={beta:<7} {_line(polls, late)}")
    span = args.high - args.low
    for share in (0.03, 0.0375, 0.04375, 0.05):
        every = share * span
        polls, late = zip(*(evenly(x, args.low, every) for x in jobs), strict=True)
        print(f"every {every:5.2f} s        {_line(polls, late)}")


if __name__ == "__main__":
    main()
