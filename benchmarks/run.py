"""Benchmarks of the runner as its users would compare it (issue 7; README "Performance").

    python benchmarks/run.py [--quick] [--only NAME ...]

Each scenario runs in its own subprocess (so peak RSS is its own) and prints one JSON object per
line with at least ``scenario, shots, makespan_s, bound_s, makespan_ratio, cpu_ms_per_shot,
peak_rss_mb, polls_per_job``; all lines also go to ``benchmarks/results/<time>.json`` with the
machine's facts. Time is scaled: 1 s of a real provider is 10 ms here (jobs of 20-100 s become
0.2-1 s, a 10 s poll interval 0.1 s, 40 submits/min 4000/min).

Scenarios:
  makespan      2,000 shots, max_in_flight 64, latency U(0.2, 1) s: makespan / ideal bound, and
                the usual script (asyncio.gather, one semaphore around submit+poll, fixed poll
                interval) on the same latencies, as a ratio to ours
  rate          the same through 40 submits/min (scaled): makespan / rate bound, and the script
  polls         polls per job with and without the provider's ETA hint
  scale         100,000 shots planned, checkpointed and run (latency 10 ms): CPU and peak RSS;
                a quarter of them again on tmpfs (/dev/shm): the CPU without the disk's share
  replay        loading and replaying a 1,000,000-event checkpoint: seconds
  download      1 GiB over loopback from a server in its own process: our verified, hashed,
                fsynced download vs the slowest of network / disk+fsync / sha256 alone, and vs
                aiohttp + hashlib + write + fsync (medians of 3 interleaved repeats), peak RSS
  video_check   the playability check (pipeline.transfer.playable) of a ~260 MB high-bitrate H.264
  MP4
                (130 MB with --quick): seconds per GB, and as a ratio to writing + hashing +
                fsyncing the same file (write_verified without the check)
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIOS = ("makespan", "rate", "polls", "scale", "replay", "download", "manifest", "video_check")
SCALE = 0.01  # seconds here per second of a real provider
TMPFS = Path("/dev/shm")  # memory-backed: the scale scenario's CPU without the disk's share


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _manifest(tmp: Path, n: int, settings: str) -> Path:
    lines = [
        "version: 1",
        "name: bench",
        "defaults: {provider: bench, model: m, duration: 5}",
        "providers:",
        f"  bench: {{{settings}}}",
        "scenes:",
        "  - id: a",
        "    shots:",
    ]
    lines += [f"      - {{id: s{i:06d}, prompt: 'shot {i}'}}" for i in range(n)]
    path = tmp / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _ours(
    n: int,
    in_flight: int,
    low: float,
    high: float,
    *,
    rpm: float | None = None,
    eta: bool = True,
    where: str | None = None,
) -> dict[str, Any]:
    from benchmarks.bench_provider import BenchService, bench_spec
    from pipeline.engine.options import RunOptions
    from pipeline.engine.runner import execute
    from pipeline.manifest.loader import load_manifest
    from pipeline.settings import ProviderSettings

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-", dir=where) as tmp:
        settings = ProviderSettings(
            max_in_flight=in_flight,
            requests_per_minute=rpm,
            poll_min_s=2.0 * SCALE,
            poll_max_s=30.0 * SCALE,
            poll_deadline_s=3600.0,
            max_downloads=in_flight,
        )
        ids = [f"a-s{i:06d}" for i in range(n)]
        service = BenchService.seeded(ids, low, high, seed=7, eta_hint=eta)
        registry = {"bench": bench_spec(service, settings)}
        manifest = load_manifest(
            _manifest(Path(tmp), n, f"max_in_flight: {in_flight}"), registry=registry
        )
        wakeups = _count_wakeups()
        cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.monotonic()
        result = await execute(manifest, Path(tmp) / "run", RunOptions(registry=registry))
        makespan = time.monotonic() - t0
        cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
        woken = wakeups()
        done = sum(1 for r in result.state.shots.values() if r.state.value == "done")
        return {
            "makespan_s": round(makespan, 3),
            "cpu_ms_per_shot": round(1000 * cpu / n, 3),
            # the event loop's own thread: scheduling, polling, encoding records (the rest of
            # cpu_ms_per_shot is file-system work in worker threads: creating, fsyncing and
            # renaming each video, fsyncing the checkpoint)
            "loop_cpu_ms_per_shot": round(1000 * loop_cpu / n, 3),
            # times the event loop woke up (a timer was due, a thread answered, a socket was
            # readable); each costs the machine's loop_wakeup_cpu_us before any Python runs
            "loop_wakeups_per_shot": round(woken / n, 2),
            "polls_per_job": round(service.polls / n, 2),
            "done": done,
            "latencies": list(service.latencies.values()),
        }


def _count_wakeups() -> Any:
    """Count the running loop's selector waits from now; returns a function giving the count."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select, count = selector.select, [0]

    def counting(timeout: float | None = None) -> Any:
        count[0] += 1
        return select(timeout)

    selector.select = counting
    return lambda: count[0]


async def _script(
    latencies: list[float], in_flight: int, poll_s: float, rpm: float | None = None
) -> float:
    """The usual script: gather all shots, one semaphore around submit+poll, fixed interval."""
    from aiolimiter import AsyncLimiter

    sem = asyncio.Semaphore(in_flight)
    limiter = AsyncLimiter(1, 60.0 / rpm) if rpm else None
    t0 = time.monotonic()

    async def one(latency: float) -> None:
        async with sem:
            if limiter is not None:
                await limiter.acquire()
            started = time.monotonic()
            while time.monotonic() - started < latency:  # noqa: ASYNC110 (the script polls)
                await asyncio.sleep(poll_s)

    await asyncio.gather(*(one(x) for x in latencies))
    return time.monotonic() - t0


def _bound(latencies: list[float], in_flight: int, spacing: float = 0.0) -> float:
    """The ideal makespan: the same jobs, in manifest order, on ``in_flight`` slots, no overhead.

    Each job starts the instant a slot frees (list scheduling), and the i-th submit no earlier
    than ``i * spacing`` seconds (a rate limit). For one fixed latency L and no rate limit this
    is ``ceil(N / max_in_flight) x L``; for drawn latencies it is what a scheduler
    with zero cost per shot would reach without knowing the latencies in advance.
    """
    free = [0.0] * in_flight
    for i, latency in enumerate(latencies):
        start = max(heapq.heappop(free), i * spacing)
        heapq.heappush(free, start + latency)
    return max(free)


def _lower_bound(latencies: list[float], in_flight: int) -> float:
    """No schedule of these jobs can beat this: total work over the slots, or the longest job."""
    return max(max(latencies), sum(latencies) / in_flight)


def _against(
    n: int, ours: dict[str, Any], latencies: list[float], in_flight: int, script: float
) -> dict[str, Any]:
    """A scenario's line: our figures, the ideal bound, and the usual script beside them."""
    bound, lower = _bound(latencies, in_flight), _lower_bound(latencies, in_flight)
    return {
        "shots": n,
        **ours,
        "bound_s": round(bound, 3),
        "makespan_ratio": round(ours["makespan_s"] / bound, 4),
        "lower_bound_s": round(lower, 3),
        "ratio_to_lower_bound": round(ours["makespan_s"] / lower, 4),
        "script_makespan_s": round(script, 3),
        "script_vs_ours": round(script / ours["makespan_s"], 3),
    }


async def scenario_makespan(quick: bool) -> dict[str, Any]:
    n = 500 if quick else 2000
    ours = await _ours(n, 64, 0.2, 1.0)
    lat = ours.pop("latencies")
    script = await _script(lat, 64, 10.0 * SCALE)
    return _against(n, ours, lat, 64, script)


async def scenario_rate(quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    rpm = 40 / SCALE  # 40 submits per (scaled) minute
    ours = await _ours(n, 64, 0.2, 1.0, rpm=rpm)
    lat = ours.pop("latencies")
    script = await _script(lat, 64, 10.0 * SCALE, rpm=rpm)
    line = _against(n, ours, lat, 64, script)
    bound = _bound(lat, 64, spacing=60.0 / rpm)  # slots and the submit rate together
    line.update(bound_s=round(bound, 3), makespan_ratio=round(ours["makespan_s"] / bound, 4))
    return line


async def scenario_polls(quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    with_eta = await _ours(n, 64, 0.2, 1.0, eta=True)
    lat = with_eta.pop("latencies")
    without = await _ours(n, 64, 0.2, 1.0, eta=False)
    without.pop("latencies")
    bound = _bound(lat, 64)
    script_polls = sum(int(x / (10.0 * SCALE)) + 1 for x in lat) / n
    return {
        "shots": n,
        **with_eta,
        "bound_s": round(bound, 3),
        "makespan_ratio": round(with_eta["makespan_s"] / bound, 4),
        "polls_per_job_without_eta": without["polls_per_job"],
        "makespan_ratio_without_eta": round(without["makespan_s"] / bound, 4),
        "script_polls_per_job": round(script_polls, 2),
    }


async def scenario_scale(quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 100_000
    ours = await _ours(n, 256, 0.01, 0.01)
    lat = ours.pop("latencies")
    bound = _bound(lat, 256)
    line = {
        "shots": n,
        **ours,
        "bound_s": round(bound, 3),
        "makespan_ratio": round(ours["makespan_s"] / bound, 4),
    }
    if TMPFS.is_dir():  # noqa: ASYNC240 (one stat, before the run) -- the same on tmpfs: the orchestration without the disk
        mem = await _ours(n // 4, 256, 0.01, 0.01, where=str(TMPFS))
        line["tmpfs_shots"] = n // 4
        line["tmpfs_cpu_ms_per_shot"] = mem["cpu_ms_per_shot"]
        line["tmpfs_loop_cpu_ms_per_shot"] = mem["loop_cpu_ms_per_shot"]
    return line


async def scenario_replay(quick: bool) -> dict[str, Any]:
    """Loading a 1,000,000-event log: ``cold_s`` replays all of it; ``makespan_s`` is the
    snapshot-backed load (what ``resume`` and ``status`` do) of the same log once a 1,000-event
    tail was appended after its snapshot.

    Each load runs in a fresh process (so each peak RSS is its own); the cold one then writes
    the snapshot, as the end of the run that wrote those events would.

    Then ``kill_*``: the load after a kill -9 at a random moment. A run-like process (the
    checkpoint's own appends from 256 tasks, group commit, the live state folded as the runner
    does, snapshots taken during the run by ``journal.snapshotter``) writes a 200,000-shot log
    and is killed once it holds 95-100 % of its 1,000,000 events (a random point); the log is
    then loaded from its last periodic snapshot (``kill_load_s``, goal < 2 s) and replayed in full
    (``kill_replay_s``), the two states compared. The snapshot policy is the default one but for
    its 30 s floor between snapshots, scaled like the other scenarios (``SCALE``: 0.3 s), since
    this writer appends a run's hours of events in seconds; so the 5 % rule decides, as in a real
    run. ``writer_*``: that writer's append rate, event-loop lag and RSS; ``writer_no_snapshots_*``
    (not with ``--quick``): the same writer killed at the same point without snapshots, so what
    taking them costs a process that does nothing but append (a real run waits on its providers).
    """
    from pipeline.journal.checkpoint import Record, encode
    from pipeline.journal.snapformat import parse_header

    n = 1_000_000
    shots = n // 5
    tail_shots = 200  # 1,000 events appended after the snapshot

    async def measure(path: Path, how: str, expect: int | None = None) -> dict[str, Any]:
        return await _replay_load(path, how, seq, expect)

    cycle = _replay_cycle()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        path = Path(tmp) / "checkpoint.jsonl"
        seq = 0

        def write(first: int, last: int) -> None:
            nonlocal seq
            with path.open("ab") as fh:
                for s in range(first, last):
                    for ev, data in cycle:
                        seq += 1
                        fh.write(encode(Record(seq, "2026-11-23T10:00:00.000Z", ev, f"s{s}", data)))

        write(0, shots)
        cold = await measure(path, "cold", shots)  # then it writes the snapshot
        write(shots, shots + tail_shots)  # the next run appends 1,000 events
        warm = await measure(path, "warm", shots + tail_shots)
        line = {
            "shots": shots,
            "events": n,
            "makespan_s": round(warm["s"], 3),
            "bound_s": None,
            "makespan_ratio": None,
            "cpu_ms_per_shot": round(1000 * warm["cpu"] / shots, 4),
            "polls_per_job": None,
            "mb": round(path.stat().st_size / 1e6, 1),
            "snapshot_s": round(warm["s"], 3),
            "snapshot_peak_rss_mb": round(warm["rss"], 1),
            "cold_s": round(cold["s"], 3),
            "cold_cpu_ms_per_shot": round(1000 * cold["cpu"] / shots, 4),
            "cold_peak_rss_mb": round(cold["rss"], 1),
            "snapshot_write_s": round(cold["write_s"], 3),
            "snapshot_mb": round((Path(tmp) / "checkpoint.snapshot").stat().st_size / 1e6, 1),
            "tail_events": tail_shots * 5,
            "peak_rss_mb": round(max(cold["rss"], warm["rss"]), 1),
        }
    kill_at = int(n * random.Random().uniform(0.95, 1.0))
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        run_dir = Path(tmp)
        writer = await _replay_writer_run(run_dir, shots, kill_at, snapshots=True)
        with (run_dir / "checkpoint.snapshot").open("rb") as fh:
            covered = parse_header(fh.readline())["seq"]
        killed = await measure(run_dir / "checkpoint.jsonl", "warm+digest")
        full = await measure(run_dir / "checkpoint.jsonl", "replay+digest")
        assert killed["digest"] == full["digest"], "the loaded state differs from the replay"
        line |= {
            "kill_events": full["seq"],
            "kill_load_s": round(killed["s"], 3),
            "kill_replay_s": round(full["s"], 3),
            "kill_tail_events": full["seq"] - covered,
            "kill_snapshots": writer["snapshots"],
            "kill_load_peak_rss_mb": round(killed["rss"], 1),
            "kill_snapshot_mb": round((run_dir / "checkpoint.snapshot").stat().st_size / 1e6, 1),
            "writer_events_per_s": writer["rate"],
            "writer_loop_lag_p99_ms": writer["lag_p99_ms"],
            "writer_loop_lag_max_ms": writer["lag_max_ms"],
            "writer_peak_rss_mb": writer["rss"],
            "writer_rss_at_kill_mb": writer["rss_now"],
        }
    if not quick:
        with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
            bare = await _replay_writer_run(Path(tmp), shots, kill_at, snapshots=False)
        line |= {
            "writer_no_snapshots_events_per_s": bare["rate"],
            "writer_no_snapshots_loop_lag_p99_ms": bare["lag_p99_ms"],
            "writer_no_snapshots_loop_lag_max_ms": bare["lag_max_ms"],
            "writer_no_snapshots_peak_rss_mb": bare["rss"],
            "writer_no_snapshots_rss_at_kill_mb": bare["rss_now"],
        }
    line["peak_rss_mb"] = max(line["peak_rss_mb"], killed["rss"], full["rss"])
    return line


def _replay_cycle() -> list[tuple[Any, dict[str, Any]]]:
    """The events of one shot in ``scenario_replay``'s logs."""
    from pipeline.models import Event

    return [
        (Event.SHOT_PLANNED, {"fp": "sha256:abc", "prov": "venice", "model": "wan-2-7"}),
        (Event.SUBMIT_INTENT, {"att": 1, "key": "run:shot:1", "est_usd": 0.5}),
        (Event.SUBMITTED, {"job": "123e4567-e89b-12d3", "prov": "venice", "model": "wan-2-7"}),
        (Event.COMPLETED, {}),
        (Event.FETCHED, {"path": "shots/x.mp4", "bytes": 123456, "sha256": "ab" * 32}),
    ]


# One load of ``scenario_replay`` in a fresh process: argv = path, how, seq of the last record.
# cold: every record folded into the state as it is read and checked, none kept (the same state
# as ``replay(load(...).records)``), then the snapshot written; replay: the same, no snapshot
# written; warm: what ``status`` and ``resume`` do. ``+digest``: a SHA-256 of the state's repr.
_REPLAY_LOAD = (
    "import hashlib, json, sys, time\n"
    "from pathlib import Path\n"
    "from pipeline.journal.checkpoint import load\n"
    "from pipeline.journal.snapshot import open_state, write_snapshot\n"
    "from pipeline.journal.state import RunState, folder\n"
    "path, (how, _, digest) = Path(sys.argv[1]), sys.argv[2].partition('+')\n"
    "cpu0, t0 = time.process_time(), time.monotonic()\n"
    "if how in ('cold', 'replay'):\n"
    "    state = RunState()\n"
    "    loaded = load(path, repair=False, fold=folder(state))\n"
    "else:\n"
    "    state, loaded = open_state(path)\n"
    "s, cpu = time.monotonic() - t0, time.process_time() - cpu0\n"
    "status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
    "rss = int(status.split()[0]) / 1024  # ru_maxrss would count the parent's too\n"
    "got = {'s': s, 'cpu': cpu, 'shots': len(state.shots), 'rss': rss, 'seq': loaded.last_seq}\n"
    "if how == 'cold':\n"
    "    t0 = time.monotonic()\n"
    "    size, seq = path.stat().st_size, int(sys.argv[3])\n"
    "    write_snapshot(path.parent, state, offset=size, last_seq=seq)\n"
    "    got['write_s'] = time.monotonic() - t0\n"
    "if digest:\n"
    "    h = hashlib.sha256(repr([getattr(state, f) for f in ('run_id', 'manifest', 'simulated',"
    " 'finished')]).encode())\n"
    "    for rec in state.shots.values():\n"
    "        h.update(repr(rec).encode())\n"
    "    got['digest'] = h.hexdigest()\n"
    "print(json.dumps(got))\n"
)


async def _replay_load(path: Path, how: str, seq: int, expect: int | None) -> dict[str, Any]:
    import anyio

    cmd = [sys.executable, "-c", _REPLAY_LOAD, str(path), how, str(seq)]
    got: dict[str, Any] = json.loads((await anyio.run_process(cmd, cwd=ROOT)).stdout)
    assert expect is None or got["shots"] == expect
    return got


async def _replay_writer_run(
    run_dir: Path, shots: int, kill_at: int, *, snapshots: bool
) -> dict[str, Any]:
    """Run :func:`_replay_writer` in a child process; kill -9 it once ``kill_at`` events are
    written; its last progress report."""
    code = f"from benchmarks.run import _replay_writer; _replay_writer({str(run_dir)!r}, {shots}"
    code += f", {snapshots})"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    last: dict[str, Any] = {}
    try:
        async for raw in proc.stdout:
            last = json.loads(raw)
            if last["seq"] >= kill_at:
                break
    finally:
        proc.kill()  # SIGKILL: no end of run, no last snapshot
        await proc.wait()
    assert last.get("seq", 0) >= kill_at, f"the writer stopped early: {last}"
    return last


def _replay_writer(run_dir: str, shots: int, snapshots: bool) -> None:
    """The run-like writer of ``scenario_replay`` (in its own process, until it is killed).

    Plans ``shots`` shots (``append_many``), then 256 tasks take the next shot and append its
    ``submit_intent``, ``submitted``, ``completed``, ``fetched`` through ``Checkpoint.append``
    (durable ones fsynced, concurrent appends sharing one fsync), folding each record into a live
    state as the runner does; with ``snapshots``, ``journal.snapshotter`` takes its snapshots.
    Prints its progress every 50 ms: events written, events per second, the event loop's lag
    (a 10 ms sleep's lateness: p99 and max, ms), snapshots written, peak and current RSS (MB).
    """
    asyncio.run(_replay_write(Path(run_dir), shots, snapshots))


async def _replay_write(run_dir: Path, shots: int, snapshots: bool) -> None:
    import contextlib

    from pipeline.journal import snapshotter
    from pipeline.journal.checkpoint import Checkpoint
    from pipeline.journal.state import RunState, apply

    policy = snapshotter.Policy(min_interval_s=30 * SCALE, check_s=2 * SCALE)
    state = RunState()
    ckpt = await Checkpoint.open(run_dir)
    lags: list[float] = []
    last = [0]
    t0 = time.monotonic()
    snapper: snapshotter.Snapshotter | None = None
    plan, *steps = _replay_cycle()

    def report() -> str:
        ordered = sorted(lags)
        status = Path("/proc/self/status").read_text()
        hwm, now = status.split("VmHWM:")[1], status.split("VmRSS:")[1]
        return json.dumps(
            {
                "seq": last[0],
                "rate": round(last[0] / (time.monotonic() - t0)),
                "lag_p99_ms": round(1000 * ordered[int(0.99 * len(ordered))], 2) if lags else 0,
                "lag_max_ms": round(1000 * ordered[-1], 2) if lags else 0,
                "snapshots": snapper.written if snapper is not None else 0,
                "rss": round(int(hwm.split()[0]) / 1024, 1),
                "rss_now": round(int(now.split()[0]) / 1024, 1),
            }
        )

    async def ticker() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    async def reporter() -> None:
        while True:
            await asyncio.sleep(0.05)
            print(report(), flush=True)

    queue = iter(range(shots))

    async def worker() -> None:
        for i in queue:
            for ev, data in steps:
                record = await ckpt.append(ev, f"s{i}", **data)
                apply(state, record)
                last[0] = max(last[0], record.seq)

    async with contextlib.AsyncExitStack() as stack:
        if snapshots:
            snapper = await stack.enter_async_context(snapshotter.periodic(ckpt, policy))
        for record in ckpt.append_many((plan[0], f"s{i}", plan[1]) for i in range(shots)):
            apply(state, record)
        await ckpt.sync()
        last[0] = shots
        tasks = [asyncio.create_task(ticker()), asyncio.create_task(reporter())]
        await asyncio.gather(*(worker() for _ in range(256)))
        print(report(), flush=True)
        await asyncio.sleep(3600)  # killed by now
        for task in tasks:
            task.cancel()
    await ckpt.close()


async def scenario_download(quick: bool) -> dict[str, Any]:
    """1 GiB (256 MiB with --quick) from a server in its own process: ours against the network,
    the disk and sha256 alone, and against aiohttp + hashlib + write + fsync (3 interleaved
    repeats; see benchmarks/bench_download.py)."""
    from benchmarks.bench_download import measure

    return await measure(quick)


async def scenario_manifest(quick: bool) -> dict[str, Any]:
    """Loading (reading, validating, expanding) a 100,000-shot manifest in a fresh process.

    The YAML is read by PyYAML's own loader (its node tree, then the data): ``peak_rss_mb`` is
    the child's high-water mark, interpreter and imports included (``baseline_rss_mb``).
    """
    import anyio

    n = 10_000 if quick else 100_000
    child = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "def hwm():\n"
        "    status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "    return int(status.split()[0]) / 1024\n"
        "from pipeline.manifest.loader import load_manifest\n"
        "base = hwm()\n"
        "cpu0, t0 = time.process_time(), time.monotonic()\n"
        "m = load_manifest(sys.argv[1])\n"
        "s, cpu = time.monotonic() - t0, time.process_time() - cpu0\n"
        "got = {'s': s, 'cpu': cpu, 'shots': len(m.shots), 'rss': hwm(), 'base': base}\n"
        "print(json.dumps(got))\n"
    )
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        text = _manifest(Path(tmp), n, "max_in_flight: 4").read_text()
        text = text.replace("provider: bench, model: m", "provider: local")
        (Path(tmp) / "bench.yaml").write_text(text.replace("  bench: {", "  local: {"))
        runs = []
        for _ in range(3):
            cmd = [sys.executable, "-c", child, str(Path(tmp) / "bench.yaml")]
            done = await anyio.run_process(cmd, cwd=ROOT, check=False)
            if done.returncode:
                raise RuntimeError(done.stderr.decode()[-2000:])
            runs.append(json.loads(done.stdout))
    runs.sort(key=lambda r: r["s"])
    mid = runs[1]
    assert mid["shots"] == n
    return {
        "shots": n,
        "load_s": round(mid["s"], 2),
        "load_s_range": [round(runs[0]["s"], 2), round(runs[-1]["s"], 2)],
        "cpu_ms_per_shot": round(1000 * mid["cpu"] / n, 3),
        "peak_rss_mb": round(max(r["rss"] for r in runs), 1),
        "baseline_rss_mb": round(mid["base"], 1),
        "polls_per_job": None,
    }


def _noise_mp4(path: Path, frames: int, fps: int = 24, gop: int = 250) -> None:
    """A high-bitrate H.264 MP4: 640x360 noise, lossless (~0.55 MB a frame), one keyframe per
    ``gop`` frames (250: x264's default, so the check decodes a long last group of pictures)."""
    import av

    rng = random.Random(7)
    pool = []
    for _ in range(16):  # noise frames, cycled: each differs from the one before
        frame = av.VideoFrame(640, 360, "yuv420p")
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        pool.append(frame)
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0", "g": str(gop)}
        for i in range(frames):
            frame = pool[i % len(pool)]
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def scenario_video_check(quick: bool) -> dict[str, Any]:
    """The playability check's cost per GB, next to writing + hashing the same file.

    ``write_hash_s``: write_verified without the check (read from the page cache, hashed,
    written, fsynced); ``check_s``: pipeline.transfer.playable.check of the written file in a worker
    thread, as the runner runs it (demux every packet, decode the first frame and the last
    group of pictures); ``demux_s``: the demuxing part alone; ``with_check_s``: write_verified
    with the check (``expect``), end to end.
    """
    import anyio
    import av

    from pipeline.models import Download
    from pipeline.transfer import playable
    from pipeline.transfer.download import write_verified

    fps, frames, gop = 24, (240 if quick else 480), 250
    expected = playable.Expected(frames / fps, "bench")

    async def record(_: object, publish: object) -> None:
        return None

    async def timed_write(src: Path, size: int, final: Path, check: bool) -> float:
        async def chunks() -> Any:
            with src.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk

        t0 = time.monotonic()
        await write_verified(
            Download(chunks(), size=size),
            final,
            max_bytes=size,
            record=record,
            expect=expected if check else None,
        )
        return time.monotonic() - t0

    def demux_only(path: Path) -> int:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.demux(container.streams.video[0]))

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        src = Path(tmp) / "src.mp4"
        t0 = time.monotonic()
        await anyio.to_thread.run_sync(_noise_mp4, src, frames, fps, gop)
        encode_s = time.monotonic() - t0
        size = src.stat().st_size
        write_s = await timed_write(src, size, Path(tmp) / "a.mp4", check=False)
        t0 = time.monotonic()
        facts = await anyio.to_thread.run_sync(playable.check, Path(tmp) / "a.mp4", expected)
        check_s = time.monotonic() - t0
        t0 = time.monotonic()
        await anyio.to_thread.run_sync(demux_only, Path(tmp) / "a.mp4")
        demux_s = time.monotonic() - t0
        with_check_s = await timed_write(src, size, Path(tmp) / "b.mp4", check=True)
    gb = size / 1e9
    return {
        "shots": 1,
        "makespan_s": round(with_check_s, 3),
        "bound_s": round(write_s, 3),
        "makespan_ratio": round(with_check_s / write_s, 3),
        "cpu_ms_per_shot": None,
        "polls_per_job": None,
        "mb": round(size / 1e6, 1),
        "frames": facts.frames,
        "gop_frames": gop,
        "tail_frames": frames - gop * ((frames - 1) // gop),
        "encode_s": round(encode_s, 2),
        "write_hash_s": round(write_s, 3),
        "check_s": round(check_s, 3),
        "demux_s": round(demux_s, 3),
        "with_check_s": round(with_check_s, 3),
        "seconds_per_gb": round(check_s / gb, 2),
        "demux_seconds_per_gb": round(demux_s / gb, 2),
        "write_hash_seconds_per_gb": round(write_s / gb, 2),
        "vs_download": round(check_s / write_s, 2),
    }


def _one(name: str, quick: bool) -> None:
    import stamina

    stamina.set_testing(False)
    result = asyncio.run(globals()[f"scenario_{name}"](quick))
    # a scenario measuring in child processes reports their peak RSS itself
    print(json.dumps({"scenario": name, "peak_rss_mb": round(_rss_mb(), 1), **result}))


def _machine_costs(rounds: int) -> dict[str, float]:
    """What this machine charges, in CPU µs, for what every shot does besides our own Python.

    Measured before the scenarios (writeback left by the 1 GB download inflates file creation
    for a while); the median of ``rounds`` rounds (3; 1 with --quick) of: creating a file,
    appending + fsyncing a log line, one wake-up of an idle asyncio loop on a timer.
    """
    runs = [{**_fs_costs(), **asyncio.run(_wakeup_cost())} for _ in range(rounds)]
    return {key: sorted(r[key] for r in runs)[rounds // 2] for key in runs[0]}


async def _wakeup_cost(tasks: int = 16, sleeps: int = 100) -> dict[str, float]:
    """CPU µs per wake-up of an otherwise idle loop: tasks sleeping 1-10 ms at random."""
    rng = random.Random(3)

    async def one() -> None:
        for _ in range(sleeps):
            await asyncio.sleep(rng.uniform(0.001, 0.01))

    cpu0 = time.thread_time()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return {"loop_wakeup_cpu_us": round(1e6 * (time.thread_time() - cpu0) / (tasks * sleeps), 1)}


def _fs_costs(n: int = 200) -> dict[str, float]:
    """CPU µs of this machine's file system for what every shot does: create a file, fsync it."""
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        c0 = time.process_time()
        for i in range(n):
            os.close(os.open(Path(tmp) / f"{i}.part", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        create = time.process_time() - c0
        fd = os.open(Path(tmp) / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        c0 = time.process_time()
        for _ in range(n):
            os.write(fd, b"x" * 200)
            os.fsync(fd)
        sync = time.process_time() - c0
        os.close(fd)
    return {
        "file_create_cpu_us": round(1e6 * create / n, 1),
        "append_fsync_cpu_us": round(1e6 * sync / n, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these")
    parser.add_argument("--one", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.quick)
        return 0
    costs = _machine_costs(1 if args.quick else 3)
    lines = []
    for name in args.only or SCENARIOS:
        cmd = [sys.executable, __file__, "--one", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        if out.returncode != 0:
            print(json.dumps({"scenario": name, "error": out.stderr.strip()[-2000:]}))
            continue
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        lines.append(json.loads(line))
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        **costs,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"{stamp}{'-quick' if args.quick else ''}.json").write_text(
        json.dumps({"machine": machine, "results": lines}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
