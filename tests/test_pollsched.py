"""The learned poll schedule (engine.pollsched): where polls go, what is learned, what is kept."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from pipeline.engine import pollsched
from pipeline.engine.pollsched import CompletionTimes, History, first_delay, next_delay
from pipeline.settings import PollPolicy

POLICY = PollPolicy(min_s=2.0, max_s=30.0, deadline_s=3600.0)


def seen(n: int = 200, lo: float = 20.0, hi: float = 100.0, seed: int = 1) -> CompletionTimes:
    rng = random.Random(seed)
    return CompletionTimes(rng.uniform(lo, hi) for _ in range(n))


def follow(
    latency: float, times: CompletionTimes | None, eta: float | None = None
) -> tuple[int, float]:
    """Poll one job that finishes ``latency`` s after submit: (polls, seconds found late)."""
    t = first_delay(0.0, times, POLICY)
    wait, polls = POLICY.min_s, 0
    while True:
        polls += 1
        if t >= latency:
            return polls, t - latency
        left = None if eta is None else max(0.0, latency - t) * eta
        wait = next_delay(t, wait, times, POLICY, POLICY.min_s, left)
        t += wait


def test_quantiles_and_spread_come_from_what_was_seen() -> None:
    times = CompletionTimes([10.0, 20.0, 30.0, 40.0, 50.0])
    assert (times.quantile(0.0), times.quantile(0.5), times.quantile(1.0)) == (10.0, 30.0, 50.0)
    assert times.spread_after(15.0) == 2 * (40.0 - 15.0)  # median of 20..50 ahead of 15 s
    assert times.spread_after(35.0) is None  # only two ahead: a straggler, nothing learned


def test_only_the_most_recent_times_are_kept() -> None:
    times = CompletionTimes(float(i) for i in range(pollsched.KEEP + 100))
    assert len(times) == pollsched.KEEP
    assert times.quantile(0.0) == 100.0
    assert times.recent()[-1] == pollsched.KEEP + 99


def test_the_first_poll_goes_where_the_fastest_jobs_finish() -> None:
    times = seen()
    assert first_delay(0.0, times, POLICY) == pytest.approx(times.quantile(0.02))
    assert 20.0 <= first_delay(0.0, times, POLICY) <= 22.0
    assert first_delay(0.0, None, POLICY) == POLICY.min_s  # nothing learned: poll_min_s
    assert first_delay(500.0, times, POLICY) == 0.0  # a resumed, older job: at once


def test_waits_shrink_as_a_job_nears_the_slowest_times_seen() -> None:
    times = seen()
    random.seed(3)
    waits = [
        statistics.mean(next_delay(t, 2.0, times, POLICY, 2.0) for _ in range(50))
        for t in (25, 60, 90)
    ]
    assert waits[0] > waits[1] > waits[2]
    assert all(POLICY.min_s <= w <= POLICY.max_s for w in waits)


def test_a_straggler_backs_off_from_its_last_wait_within_the_bounds() -> None:
    times = seen()
    waits = [next_delay(150.0, 4.0, times, POLICY, 2.0) for _ in range(50)]
    assert all(4.0 * 1.25 * 0.9 - 1e-9 <= w <= 4.0 * 1.25 * 1.1 + 1e-9 for w in waits)
    assert next_delay(150.0, 29.0, times, POLICY, 2.0) <= POLICY.max_s
    assert next_delay(30.0, 2.0, times, POLICY, 12.0) >= 12.0  # a wider floor wins


def test_a_providers_eta_is_used_but_never_trusted_alone() -> None:
    times = seen()
    learned = max(next_delay(60.0, 2.0, times, POLICY, 2.0) for _ in range(50))
    # An ETA far beyond what was learned does not stretch the wait...
    assert max(next_delay(60.0, 2.0, times, POLICY, 2.0, eta_s=500.0) for _ in range(50)) <= learned
    # ...and a close one brings the poll to just after it.
    assert 3.0 <= next_delay(60.0, 2.0, times, POLICY, 2.0, eta_s=3.0) <= 3.0 + 0.3


def test_learned_polls_beat_fixed_intervals_on_polls_and_lateness() -> None:
    """Jobs of 20-100 s: the learned schedule uses fewer polls than a fixed 5 s poll and finds
    jobs sooner; a cold start (nothing learned) still ends every job."""
    times = seen()
    rng = random.Random(2)
    latencies = [rng.uniform(20.0, 100.0) for _ in range(2000)]
    random.seed(4)
    learned = [follow(x, times) for x in latencies]
    # the usual script: a poll right after the submit, then one every 5 s until done
    fixed_5s = [(int(x // 5) + 2, (int(x // 5) + 1) * 5 - x) for x in latencies]
    polls, late = (statistics.mean(v) for v in zip(*learned, strict=True))
    polls_5s, late_5s = (statistics.mean(v) for v in zip(*fixed_5s, strict=True))
    assert polls < polls_5s
    assert late < late_5s
    cold = [follow(x, None) for x in latencies[:200]]
    assert all(p >= 1 for p, _ in cold)
    # Nothing learned: never more than LATE_SHARE (+ jitter) late, in few polls for the range
    assert all(late <= 0.11 * x + 1e-9 for (_, late), x in zip(cold, latencies, strict=False))
    assert statistics.mean(p for p, _ in cold) < 30


def test_with_nothing_learned_a_wait_is_at_most_a_tenth_of_the_jobs_age() -> None:
    """Cold start: a backoff alone would wait 25 s at age 30 s; the cap keeps it near 3 s."""
    waits = [next_delay(30.0, 20.0, None, POLICY, 2.0) for _ in range(50)]
    assert all(2.7 - 1e-9 <= w <= 3.3 + 1e-9 for w in waits)
    assert next_delay(5.0, 2.0, None, POLICY, 2.0) >= 2.0  # the floor still wins


def test_history_survives_runs_and_keeps_rehearsals_apart(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "completions.json"
    first = History(path)
    first.times("venice", "wan-2.5").add(42.0)
    History(path, simulated=True).times("venice", "wan-2.5").add(1.0)  # not saved
    first.save()
    again = History(path)
    assert again.times("venice", "wan-2.5").recent() == [42.0]
    assert len(History(path, simulated=True).times("venice", "wan-2.5")) == 0
    path.write_text("{not json")
    assert len(History(path).times("venice", "wan-2.5")) == 0  # damaged: ignored
