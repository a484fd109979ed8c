"""Makespan over HTTP: the real ``pipeline run`` against a provider in its own process.

    python benchmarks/http_bench.py [--quick] [--shots N] [--slots S] [--scale F] [--repeats R]
                                    [--rpm RPM] [--seed SEED] [--out DIR]

What runs: ``benchmarks/fake_provider.py`` (the RelayDance simulator, a fresh process per
measurement) and, against it, one of four clients, each in its own process:

- ``ours``: the ``pipeline`` console script, ``pipeline run MANIFEST``, on a generated manifest
  (N shots of the adapter's default model; ``max_in_flight`` S; the adapter's poll bounds,
  2 s and 30 s, scaled), with the key in ``RELAYDANCE_API_KEY`` and the server in
  ``PIPELINE_RELAYDANCE_BASE_URL``, as a user would run it. The adapter's default rate limits
  (30 submits and 120 polls a minute) are lifted, as the script has none; ``--rpm`` puts the
  same submit limit on both.
- ``ours_warm``: the same, after an unmeasured run of other jobs (another seed) from the same
  distribution, whose completion times the poll schedule keeps in the user cache: what a user's
  second batch on a provider gets. ``ours`` starts with an empty cache, as a first batch does.
- ``script_2s`` / ``script_5s``: ``benchmarks/script_baseline.py``, the usual gather + one
  semaphore around submit+poll + fixed poll interval (2 s and 5 s, scaled) + download script.

Why it is fair: the provider answers no ETA (the client must discover each job's end by polling,
as with RelayDance), latencies are wall-clock and keyed by prompt (same seed: same latency per
shot for every client), the server is not the client's process (nothing shared, its CPU not
counted), and the variants are interleaved (the order rotates each repeat) so a busy machine
hurts all of them alike.

Measured, one JSON line per run: ``makespan_s`` (the provider's first submit to its last video
answered), ``bound_s`` (list scheduling of the same jobs in manifest order on S slots, with zero
overhead, from the latencies the provider actually used; under ``--rpm`` the i-th submit no
earlier than i x 60/rpm) and their ratio; ``wall_s`` (the client process's wall time;
``before_first_submit_s`` and ``after_last_fetch_s`` are its parts outside the makespan:
start-up, and for ``pipeline run`` the storyboard outputs it writes after every run, animatic
included); ``polls_per_job``; ``late_s`` (median time from a job's end to the first poll that
saw it). CPU (user + system, every thread of the client process): ``cpu_ms_per_shot`` all of
it (``getrusage(RUSAGE_CHILDREN)`` around the process); ``net_cpu_ms_per_shot`` less the
start-up (``startup_cpu_ms``: the CPU of ``pipeline validate`` on the same manifest, or of the
script with ``--shots 0``, measured in the same run; ``validate`` imports no HTTP client, so
this under-counts the run's start-up by aiohttp's import and the figure errs against ours);
``run_cpu_ms_per_shot`` only what it used
between the first submit and the last video (read from ``/proc/<pid>/stat`` every 20 ms: Linux
only), the orchestration itself; ``cpu_before_first_submit_ms`` and ``cpu_after_last_fetch_ms``
the rest. Time is scaled: ``--scale 0.1`` (default) turns jobs of 20-100 s into 2-10 s.
Results go to ``benchmarks/results/<UTC time>-http.json``; ``benchmarks/report.py`` makes the
Markdown table.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.providers.relaydance.codec import DEFAULTS
from pipeline.providers.relaydance.spec import SPEC

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
VARIANTS = {"ours": None, "ours_warm": None, "script_2s": 2.0, "script_5s": 5.0}  # script: poll s
#: ``pipeline run`` whose poll schedule starts from an earlier run's completion times (a user's
#: second batch): a priming run of other jobs from the same distribution goes first, unmeasured.
WARM = frozenset({"ours_warm"})
#: Added to ``--seed`` for the priming run: other jobs than the measured ones, same distribution.
PRIME_SEED_OFFSET = 1000
LOW_S, HIGH_S = 20.0, 100.0  # job latency of the real provider, seconds (uniform)
UNLIMITED = 1e9  # per minute: the manifest's way to lift the adapter's default rate limits
#: The console script users run, installed beside this interpreter (``pip install -e .``).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
SAMPLE_S = 0.02  # how often the client's CPU is read while it runs
DEFAULTS_QUICK_FULL = {
    "shots": (20, 200),
    "slots": (5, 20),
    "scale": (0.05, 0.1),
    "repeats": (1, 3),
}
NOT_SUMMARIZED = frozenset({"repeat", "shots", "slots", "scale", "rpm", "exit_code"})


def prompt(i: int) -> str:
    """Shot ``i``'s prompt: the same as ``script_baseline.prompt`` (latencies are keyed by it)."""
    return f"bench shot {i}"


def bound(latencies: list[float], slots: int, spacing: float = 0.0) -> float:
    """The ideal makespan: these jobs in this order on ``slots``, each started when a slot frees.

    List scheduling with zero overhead (``_bound`` of ``benchmarks/run.py``): no scheduler that
    does not know the latencies in advance does better in manifest order. The i-th submit is
    no earlier than ``i * spacing`` s (a rate limit).
    """
    free = [0.0] * slots
    for i, latency in enumerate(latencies):
        start = max(heapq.heappop(free), i * spacing)
        heapq.heappush(free, start + latency)
    return max(free)


def manifest(path: Path, n: int, slots: int, scale: float, rpm: float | None, host: str) -> Path:
    """A manifest of ``n`` shots for the relaydance provider, its poll bounds scaled."""
    lines = [
        "version: 1",
        "name: http-bench",
        f"defaults: {{provider: relaydance, model: {SPEC.default_model}, duration: 5}}",
        "providers:",
        "  relaydance:",
        f"    max_in_flight: {slots}",
        f"    poll_min_s: {DEFAULTS.poll_min_s * scale:g}",
        f"    poll_max_s: {DEFAULTS.poll_max_s * scale:g}",
        f"    requests_per_minute: {rpm / scale if rpm else UNLIMITED:g}",
        f"    polls_per_minute: {UNLIMITED:g}",
        f"downloads: {{allow_hosts: ['{host}']}}",
        "scenes:",
        "  - id: a",
        "    shots:",
    ]
    lines += [f"      - {{id: s{i:06d}, prompt: '{prompt(i)}'}}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Measured:
    """A finished client process: exit code, output, CPU, and its CPU over time."""

    returncode: int
    output: str
    cpu_s: float  #: user + system, every thread (``RUSAGE_CHILDREN`` around it)
    began: float  #: Unix time it was started
    ended: float  #: Unix time it was seen exited
    samples: list[tuple[float, float]]  #: (Unix time, CPU s so far), read from /proc

    def cpu_at(self, when: float) -> float | None:
        """CPU seconds the process had used by ``when`` (the last sample before), if known."""
        seen = [cpu for at, cpu in self.samples if at <= when]
        return seen[-1] if seen else None


def _cpu_so_far(pid: int) -> float | None:
    """CPU seconds of process ``pid`` so far (all threads), from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # not Linux, or gone
    fields = text.rpartition(")")[2].split()  # utime and stime: fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(cmd: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run ``cmd`` (output to ``log``), reading its CPU every ``SAMPLE_S`` while it runs.

    The only child that ends meanwhile is ``cmd`` (the server is reaped after), so the change
    in ``RUSAGE_CHILDREN`` is its own.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples: list[tuple[float, float]] = []
    with log.open("w+") as out:
        began = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            cpu = _cpu_so_far(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            time.sleep(SAMPLE_S)
        ended = time.time()
        out.seek(0)
        output = out.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(proc.returncode, output, cpu_s, began, ended, samples)


def _env(base_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(
        RELAYDANCE_API_KEY=KEY,
        PIPELINE_RELAYDANCE_BASE_URL=base_url,
        XDG_CONFIG_HOME=str(home / "config"),  # the user's own config never applies
        XDG_CACHE_HOME=str(home / "cache"),
    )
    return env


class Server:
    """``benchmarks/fake_provider.py`` in its own process (a context manager)."""

    def __init__(self, low: float, high: float, seed: int, log: Path) -> None:
        cmd = [sys.executable, "-m", "benchmarks.fake_provider", "--key", KEY, "--seed", str(seed)]
        cmd += ["--low", str(low), "--high", str(high)]
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"the fake provider did not start: {log.read_text()[-2000:]}")
        ready = json.loads(line)
        self.origin, self.base_url = str(ready["origin"]), str(ready["base_url"])

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.origin}/_bench/stats", timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def one_run(variant: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One measurement: a fresh provider, the variant's start-up, then its run; the line."""
    scale, n = args.scale, args.shots
    with Server(LOW_S * scale, HIGH_S * scale, args.seed, tmp / "server.log") as server:
        env = _env(server.base_url, tmp)
        poll = VARIANTS[variant]
        if poll is None:
            if variant in WARM:
                prime(args, tmp)
            host = server.origin.split("//", 1)[1]
            path = manifest(tmp / "bench.yaml", n, args.slots, scale, args.rpm, host)
            start = [PIPELINE, "validate", str(path)]
            cmd = [PIPELINE, "run", str(path), "--jobs-dir", str(tmp / "jobs"), "--no-progress"]
        else:
            start = [sys.executable, str(ROOT / "benchmarks" / "script_baseline.py")]
            start += ["--base-url", server.base_url, "--slots", str(args.slots)]
            start += ["--poll-s", f"{poll * scale:g}", "--out", str(tmp / "videos")]
            start += ["--rpm", f"{args.rpm / scale:g}"] if args.rpm else []
            cmd = [*start, "--shots", str(n)]
            start += ["--shots", "0"]
        started = measured(start, env, tmp / "startup.log")
        if started.returncode != 0:
            raise RuntimeError(f"{variant} start-up failed: {started.output[-2000:]}")
        done = measured(cmd, env, tmp / "client.log")
        stats = server.stats()
    line = figures(stats, args)
    line.update(
        variant=variant,
        exit_code=done.returncode,
        wall_s=round(done.ended - done.began, 3),
        cpu_ms_per_shot=round(1000 * done.cpu_s / n, 3),
        net_cpu_ms_per_shot=round(1000 * (done.cpu_s - started.cpu_s) / n, 3),
        startup_cpu_ms=round(1000 * started.cpu_s, 1),
        **_phases(done, stats, n),
        server_cpu_s=stats["server_cpu_s"],
        requests=stats["requests"],
    )
    if done.returncode != 0 or line["fetched"] != n:
        line["error"] = done.output[-2000:]
    return line


def prime(args: argparse.Namespace, tmp: Path) -> None:
    """An unmeasured ``pipeline run`` of other jobs (seed + PRIME_SEED_OFFSET) from the same
    distribution, before the measured one: it leaves its completion times in the user cache
    (``XDG_CACHE_HOME`` under ``tmp``), which the measured run's poll schedule starts from."""
    seed = args.seed + PRIME_SEED_OFFSET
    low, high = LOW_S * args.scale, HIGH_S * args.scale
    with Server(low, high, seed, tmp / "prime-server.log") as server:
        host = server.origin.split("//", 1)[1]
        path = manifest(tmp / "prime.yaml", args.shots, args.slots, args.scale, args.rpm, host)
        cmd = [PIPELINE, "run", str(path), "--jobs-dir", str(tmp / "prime-jobs"), "--no-progress"]
        done = measured(cmd, _env(server.base_url, tmp), tmp / "prime.log")
    if done.returncode != 0:
        raise RuntimeError(f"the priming run failed: {done.output[-2000:]}")


def _phases(done: Measured, stats: dict[str, Any], n: int) -> dict[str, Any]:
    """Time and CPU before the first submit, between it and the last video, and after.

    The provider runs on this machine: its clock is the harness's.
    """
    fetched = [j["fetched"] for j in stats["jobs"] if j["fetched"] is not None]
    if not fetched:
        return {}
    first, last = min(j["submitted"] for j in stats["jobs"]), max(fetched)
    out = {
        "before_first_submit_s": round(first - done.began, 3),
        "after_last_fetch_s": round(done.ended - last, 3),
    }
    at_first, at_last = done.cpu_at(first), done.cpu_at(last)
    if at_first is not None and at_last is not None:
        out.update(
            cpu_before_first_submit_ms=round(1000 * at_first, 1),
            run_cpu_ms_per_shot=round(1000 * (at_last - at_first) / n, 3),
            cpu_after_last_fetch_ms=round(1000 * (done.cpu_s - at_last), 1),
        )
    return out


def figures(stats: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Makespan, bound, polls and lateness from what the provider saw."""
    order = {prompt(i): i for i in range(args.shots)}
    jobs = sorted(stats["jobs"], key=lambda j: order[j["prompt"]])
    fetched = [j for j in jobs if j["fetched"] is not None]
    line: dict[str, Any] = {k: getattr(args, k) for k in ("shots", "slots", "scale", "rpm")}
    line.update(submits=len(jobs), fetched=len(fetched))
    if not jobs or not fetched:
        return line
    spacing = 60.0 * args.scale / args.rpm if args.rpm else 0.0
    latencies = [j["latency_s"] for j in jobs]
    ideal = bound(latencies, args.slots, spacing)
    makespan = max(j["fetched"] for j in fetched) - min(j["submitted"] for j in jobs)
    late = [j["seen_done"] - j["done_at"] for j in jobs if j["seen_done"] is not None]
    line.update(
        makespan_s=round(makespan, 3),
        bound_s=round(ideal, 3),
        makespan_ratio=round(makespan / ideal, 4),
        lower_bound_s=round(max(max(latencies), sum(latencies) / args.slots), 3),
        polls_per_job=round(sum(j["polls"] for j in jobs) / len(jobs), 2),
        polls_max=max(j["polls"] for j in jobs),
        late_s=round(statistics.median(late), 3) if late else None,
        late_max_s=round(max(late), 3) if late else None,
    )
    return line


def summarize(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant and numeric figure: the median and the spread (min, max) over the repeats."""
    out: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        runs = [r for r in lines if r["variant"] == variant and "error" not in r]
        if not runs:
            continue
        entry: dict[str, Any] = {"runs": len(runs)}
        numeric = {k for r in runs for k, v in r.items() if isinstance(v, int | float)}
        for key in sorted(numeric - NOT_SUMMARIZED):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                median = round(statistics.median(values), 4)
                entry[key] = {"median": median, "min": min(values), "max": max(values)}
        out[variant] = entry
    return out


def machine(args: argparse.Namespace) -> dict[str, Any]:
    """This machine's facts (how busy it was is in the load averages before and after)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git(),
        "argv": sys.argv[1:],
        "quick": args.quick,
    }


def _git() -> str:
    """The commit measured, and how many files of the working tree differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    changed = len(dirty.stdout.splitlines())
    return head.stdout.strip() + (f" + {changed} changed file(s)" if changed else "")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 shots, 1 repeat")
    parser.add_argument("--shots", type=int, help="shots (default 200; --quick 20)")
    parser.add_argument("--slots", type=int, help="max_in_flight (default 20; --quick 5)")
    parser.add_argument("--scale", type=float, help="seconds here per real second (default 0.1)")
    parser.add_argument("--repeats", type=int, help="runs of each variant (default 3; --quick 1)")
    parser.add_argument("--rpm", type=float, help="submits per (real) minute, both clients")
    parser.add_argument("--seed", type=int, default=7, help="seed of the latencies")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    for key, (quick, full) in DEFAULTS_QUICK_FULL.items():
        setattr(args, key, getattr(args, key) or (quick if args.quick else full))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    facts = machine(args)
    lines: list[dict[str, Any]] = []
    names = list(VARIANTS)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for variant in order:
            with tempfile.TemporaryDirectory(prefix="pipeline-http-bench-") as tmp:
                line = {"repeat": repeat, **one_run(variant, args, Path(tmp))}
            print(json.dumps(line), flush=True)
            lines.append(line)
    facts["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarize(lines)
    print(json.dumps({"summary": summary}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}-http{'-quick' if args.quick else ''}.json"
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    document = {"machine": facts, "settings": settings, "results": lines, "summary": summary}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written: {path}", file=sys.stderr)
    return 1 if any("error" in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
