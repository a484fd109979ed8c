"""The distributed mode at scale: N simulated shots through 1, 2 and 4 worker processes.

    python benchmarks/bench_distributed.py [--shots 2000] [--workers 1,2,4] [--slots 32]
                                           [--low 0.5] [--high 1.0] [--rpm RPM] [--out DIR]

What runs, per worker count: a fresh PostgreSQL database (``tests/pgserver.py``'s server, started
here), the RelayDance simulator in its own process (``benchmarks/fake_provider.py``: jobs of
``--low``-``--high`` wall-clock seconds, seeded per prompt, so every configuration gets the same
latencies), object storage on moto's S3 server (in this process), W ``pipeline worker``
processes, then ``pipeline run MANIFEST --store URL --no-work`` for one manifest of N shots on one
account with ``max_in_flight`` = ``--slots`` (and ``requests_per_minute`` = ``--rpm``).

Measured: ``makespan_s`` from the provider's first submit to the moment every shot is recorded
done; ``bound_s``, the account's own bound for the same jobs: max(sum of the latencies the
provider used / slots, N / rpm minutes), i.e. what a perfect client could not beat; their ratio;
``enqueue_s`` (the ``pipeline run --no-work`` process); ``cpu_ms_per_shot`` (user + system CPU of
all workers together, from ``/proc/<pid>/stat`` just before they stop, divided by N) and
``cpu_s_per_worker``; ``max_in_flight_seen`` (the provider's own count). On this 2-core machine
PostgreSQL, the simulator, moto and the workers share the cores: CPU is the limit, not the
account. Results go to ``benchmarks/results/<UTC time>-distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import dist_env  # noqa: E402
from tests.pgserver import start_server, stop_server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _wait_done(dsn: str, run: str, shots: int, timeout_s: float) -> float:
    """Poll the journal until ``shots`` shots are done; returns the time it saw that."""
    from pipeline.journal.pgjournal import PgJournal

    deadline = time.monotonic() + timeout_s
    with PgJournal(dsn) as journal:
        while time.monotonic() < deadline:
            rows = journal.query(
                "SELECT count(*) FROM pipeline.events WHERE run_id = %s AND ev = 'fetched'", (run,)
            )
            if int(rows[0][0]) >= shots:
                return time.time()
            time.sleep(0.5)
    raise RuntimeError(f"{run}: not done in {timeout_s} s")


def measure(args: argparse.Namespace, workers: int, server: Any, endpoint: str) -> dict[str, Any]:
    """One configuration: ``workers`` processes on a fresh database; its figures."""
    import boto3

    db = f"bench_{workers}_{int(time.time())}"
    server.psql(f"CREATE DATABASE {db}")
    dsn = server.dsn(db)
    bucket = f"bench-{workers}-{int(time.time())}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    storage = (
        f"storage: {{url: 's3://{bucket}/m', endpoint_url: '{endpoint}', region: us-east-1, "
        "presign_ttl: 2h}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    with dist_env.provider(args.low, args.high) as prov:
        env = dist_env.env(prov, {"TMPDIR": str(work)})
        manifest = dist_env.manifest(
            work / "bench.yaml", "bench", args.shots, storage=storage,
            max_in_flight=args.slots, rpm=args.rpm,
        )  # fmt: skip
        procs = [dist_env.cli("worker", "--store", dsn, environ=env) for _ in range(workers)]
        for p in procs:  # each says it is up before the shots are queued
            assert p.stdout is not None
            p.stdout.readline()
        t0 = time.time()
        run = dist_env.cli(
            "run", str(manifest), "--store", dsn, "--no-work", "--trust-endpoints", environ=env
        )
        _, err = run.communicate(timeout=1800)
        if run.returncode != 0:
            raise RuntimeError(err)
        enqueue_s = time.time() - t0
        done_at = _wait_done(dsn, "bench", args.shots, 7200)
        cpu = [_cpu_s(p.pid) for p in procs]
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.communicate(timeout=120)
        account = prov.account()
        stats = prov.get("/_bench/stats")
    server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    first = min(s["t"] for s in account["submits"])
    latencies = [j["latency_s"] for j in stats["jobs"]]
    bound = max(sum(latencies) / args.slots, (args.shots / args.rpm * 60) if args.rpm else 0.0)
    makespan = done_at - first
    return {
        "workers": workers,
        "shots": args.shots,
        "slots": args.slots,
        "rpm": args.rpm,
        "submits": len(account["submits"]),
        "max_in_flight_seen": account["max_in_flight"],
        "enqueue_s": round(enqueue_s, 2),
        "makespan_s": round(makespan, 2),
        "bound_s": round(bound, 2),
        "makespan_over_bound": round(makespan / bound, 3),
        "shots_per_s": round(args.shots / makespan, 2),
        "cpu_ms_per_shot": round(1000 * sum(cpu) / args.shots, 1),
        "cpu_s_per_worker": [round(c, 1) for c in cpu],
        "provider_cpu_s": stats["server_cpu_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--slots", type=int, default=32, help="the account's max_in_flight")
    parser.add_argument("--low", type=float, default=0.5, help="shortest job, seconds")
    parser.add_argument("--high", type=float, default=1.0, help="longest job, seconds")
    parser.add_argument("--rpm", type=float, default=None, help="the account's submit rate")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(name, value)
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    os.chmod(base, 0o755)
    server, _ = start_server(base / "pg")
    moto, endpoint = _moto()
    results = []
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            row = measure(args, workers, server, endpoint)
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        moto.stop()
        stop_server(server)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "benchmark": "distributed",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": results,
    }
    path = args.out / f"{stamp}-distributed.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
