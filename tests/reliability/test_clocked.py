"""R8-R10 on a fake clock: rate limits, the 429 pause, the breaker and the poll loop, exactly.

Each test runs its event loop on fast-forwarded time (``looptime``): the loop's clock, which
the run's :class:`~pipeline.engine.clock.Clock` reads, jumps to the next timer whenever nothing
else is ready. A 600 s poll deadline passes in a fraction of a real second, and every
assertion on time is exact (to the loop's microsecond resolution), with no wall-clock slack.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import looptime
import pytest

from pipeline.engine.clock import Clock
from pipeline.engine.limits import (
    BreakerState,
    CallKind,
    CircuitBreaker,
    PausedPastDeadline,
    ProviderGate,
)
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.models import JobHandle, MediaRef, PollResult, Shot, ShotState
from pipeline.settings import BreakerPolicy, ProviderSettings
from tests.fakes import FakeProvider, FakeService, fake_spec
from tests.test_runner import manifest_for, write_manifest

T = TypeVar("T")

#: The loop's time resolution (looptime's default): differences below it are rounding.
TICK = 1e-5


class FakeTimeLoop(looptime.make_event_loop_class(asyncio.SelectorEventLoop)):  # type: ignore[misc]
    """looptime's loop, except that no timer is due before its time.

    looptime keeps time in whole microseconds and rounds a timer's due time to the nearest
    one; a timer less than half a microsecond ahead would fall due "now" again and again
    (aiolimiter re-arms such a timer until its bucket has drained: a spin). Rounding up keeps
    time moving.
    """

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return super().call_at(math.ceil(when * 1e6) / 1e6, callback, *args, context=context)


def on_fake_time(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on an event loop whose time starts at 0 and fast-forwards when idle."""
    with asyncio.Runner(loop_factory=FakeTimeLoop) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def now() -> float:
    return asyncio.get_running_loop().time()


def test_submits_start_exactly_one_rate_interval_apart() -> None:
    gate = ProviderGate("p", ProviderSettings(requests_per_minute=30))  # one per 2 s

    async def main() -> list[float]:
        starts: list[float] = []

        async def submit() -> None:
            await gate.ready(CallKind.SUBMIT)
            starts.append(now())

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(submit)
        return starts

    starts = on_fake_time(main)
    assert len(starts) == 8
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 2.0 - TICK  # never two in one interval
    assert starts[-1] <= 7 * 2.0 + TICK  # and no slot left idle: the rate is used in full


def test_paid_sends_stay_apart_even_when_their_starts_bunch_up() -> None:
    gate = ProviderGate("p", ProviderSettings(requests_per_minute=60))

    async def main() -> list[float]:
        sends: list[float] = []
        for _ in range(4):  # four sends whose intents all became durable at once
            await gate.pace_send()
            sends.append(now())
        return sends

    sends = on_fake_time(main)
    assert sends == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=TICK)


def test_a_429_pause_holds_every_call_until_its_end() -> None:
    gate = ProviderGate("p", ProviderSettings())

    async def main() -> list[float]:
        resumed: list[float] = []

        async def call() -> None:
            await gate.ready(CallKind.OTHER)
            resumed.append(now())

        gate.pause(5.0)
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
            await anyio.sleep(2.0)
            gate.pause(4.0)  # a second 429 at t=2 extends the pause to t=6
        return resumed

    assert on_fake_time(main) == pytest.approx([6.0] * 5, abs=TICK)


def test_a_huge_retry_after_is_clamped_to_max_retry_after_s() -> None:
    gate = ProviderGate("p", ProviderSettings(max_retry_after_s=600))

    async def main() -> float:
        gate.pause(100_000.0)
        await gate.ready(CallKind.SUBMIT)
        return now()

    assert on_fake_time(main) == pytest.approx(600.0, abs=TICK)


def test_a_paused_poll_gives_up_exactly_at_its_deadline() -> None:
    clock = Clock()
    gate = ProviderGate("p", ProviderSettings(), clock)

    async def main() -> float:
        gate.pause(300.0)
        with pytest.raises(PausedPastDeadline):
            await gate.ready(CallKind.POLL, deadline=clock.time() + 7.0)
        return now()

    assert on_fake_time(main) == pytest.approx(7.0, abs=1e-3)


def test_the_breaker_opens_in_its_window_and_half_opens_after_its_cool_down() -> None:
    async def main() -> list[BreakerState]:
        breaker = CircuitBreaker(BreakerPolicy(threshold=3, window_s=60, cooldown_s=30), Clock())
        seen = []
        for _ in range(3):  # three failures 61 s apart: never three inside one window
            breaker.failure()
            await anyio.sleep(61)
        seen.append(breaker.state)
        for _ in range(2):
            breaker.failure()
            await anyio.sleep(29)
        breaker.failure()  # three within 58 s: open
        seen.append(breaker.state)
        await anyio.sleep(30 - TICK * 10)
        seen.append(breaker.state)  # just before the cool-down ends
        await anyio.sleep(TICK * 20)
        seen.append(breaker.state)  # a free probe may now decide
        return seen

    assert on_fake_time(main) == [
        BreakerState.CLOSED,
        BreakerState.OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
    ]


def _clocked_run(
    tmp_path: Path, service: FakeService, settings: ProviderSettings, shots: int
) -> tuple[list[float], dict[str, list[float]], dict[str, tuple[ShotState, str | None]]]:
    """Run ``shots`` fake shots on fake time: submit times, poll times per job, final states.

    The checkpoint's fsyncs run in its own thread, which the fast-forwarding loop does not
    wait for: time may jump ahead while one is pending (never back). Deadlines and rate
    intervals hold exactly; how soon one stage follows another is not measured here. Jobs
    that finish are not used: looptime's handling of worker-thread waits (the download's
    writes) can stall the loop.
    """
    spec = replace(fake_spec(service), defaults=settings)
    manifest = manifest_for(write_manifest(tmp_path, shots), {"fake": spec})
    submits: list[float] = []
    polls: dict[str, list[float]] = {}

    class Stamped(FakeProvider):
        async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
            submits.append(now())
            return await super().submit(shot, media, key=key)

        async def poll(self, job: JobHandle) -> PollResult:
            polls.setdefault(job.job_id, []).append(now())
            return await super().poll(job)

    registry = {"fake": replace(spec, factory=lambda ctx: Stamped(ctx, service))}

    async def main() -> dict[str, tuple[ShotState, str | None]]:
        result = await execute(manifest, tmp_path / "run", RunOptions(registry=registry))
        return {sid: (rec.state, rec.error) for sid, rec in result.state.shots.items()}

    states = on_fake_time(main)
    return submits, polls, states


def test_a_job_that_never_finishes_fails_at_its_poll_deadline_polled_within_bounds(
    tmp_path: Path,
) -> None:
    settings = ProviderSettings(poll_min_s=2, poll_max_s=30, poll_deadline_s=600)
    _, polls, states = _clocked_run(tmp_path, FakeService(polls_to_finish=10**9), settings, 2)
    for state, error in states.values():
        assert state == ShotState.FAILED
        assert error is not None
        assert "timed out" in error
        assert "charged" in error
    for times in polls.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Every wait within [poll_min_s, poll_max_s]; the last one cut short by the deadline.
        assert all(2.0 - TICK <= g <= 30.0 + TICK for g in gaps[:-1]), gaps
        assert gaps[-1] <= 30.0 + TICK
        # The job was submitted at about t=0 (its handle carries the wall-clock time, which
        # the run's clock was anchored to at t=0): polled a last time at its deadline, not after.
        assert times[-1] == pytest.approx(600.0, abs=0.1)
        assert len(times) <= 600 / 2 + 1  # backed off, never faster than the floor


def test_sends_hold_the_rate_in_every_window_however_long_each_intent_takes() -> None:
    """A submit's path through the gate: start within the rate, make its intent durable (a
    write that takes 0-2.5 s on a busy disk), then send: the sends, not only the starts, stay
    one interval apart (60/min: 1 s)."""
    gate = ProviderGate("p", ProviderSettings(requests_per_minute=60))
    rng = random.Random(7)
    intents = [rng.uniform(0.0, 2.5) for _ in range(30)]

    async def main() -> list[float]:
        sends: list[float] = []

        async def submit(intent_s: float) -> None:
            await gate.ready(CallKind.SUBMIT)
            await anyio.sleep(intent_s)  # the submit intent's fsync
            await gate.pace_send()
            sends.append(now())

        async with anyio.create_task_group() as tg:
            for intent_s in intents:
                tg.start_soon(submit, intent_s)
        return sorted(sends)

    sends = on_fake_time(main)
    assert len(sends) == 30
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 1.0 - TICK, min(gaps)
    assert sends[-1] <= 29 * 1.0 + 2.5 + TICK  # and the rate is used in full
