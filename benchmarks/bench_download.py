"""The download scenario (``benchmarks/run.py --only download``): our verified download against
the machine's limits and against the download a user would write, in one run.

The origin is :mod:`benchmarks.download_server`, in its own process. Each of 3 repeats measures,
in a rotated order (so a slow minute of the VM does not land on one side only):

- ``net``: the network alone, an aiohttp read loop that discards the body;
- ``disk``, ``disk_direct``: the disk alone, writing the same bytes to a new file in the same
  directory + fsync, buffered and with ``O_DIRECT`` (the faster of the two is the disk's limit:
  on the benchmark VM, filling fresh page-cache pages costs 4 s of CPU per GiB);
- ``sha``: sha256 alone (hashlib, 4 MiB buffers) over the same bytes;
- ``baseline``: what a user would write: aiohttp ``iter_chunked(1 MiB)``, ``hashlib`` update,
  file write, fsync, all in the event loop;
- ``bare``: ours without this project's code: an aiohttp read loop copying each piece into one of
  four 4 MiB page-aligned slots, a full slot hashed by one thread and written (``O_DIRECT``) by
  another, fsync at the end; no size cap, throughput floor, part file or checks. What ours
  costs beyond it is this project's own per-piece work; what both cost beyond ``net`` is the
  machine (the threads take CPU the read loop and the server would have had);
- ``ours``: the real path, :class:`pipeline.providers.urlfetch.UrlFetcher` into
  :func:`pipeline.transfer.download.write_verified` (hashed, written, fsynced, renamed).

The figures are ``ours / min(net, disk, sha)`` in throughput (how near the slowest single
resource ours runs; goal >= 0.9), ``ours_vs_machine_bound`` (the same against the machine's
bound: the three share its CPUs, so a download cannot take less than the CPU they need
together, the whole machine's for the network part, spread over every CPU) and
``ours / baseline``, each the median of the 3 repeats
with its range; the CPU of each step (all threads, and the event loop's thread alone); the peak
RSS of each step alone (``/proc/self/clear_refs``), and what ours adds to the RSS at the size
and at a quarter of it (flat: a few slots). A 16 MiB download first warms imports and sockets
up; the files are removed outside the timings.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.download_server import blocks

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
STEPS = ("net", "disk", "sha", "baseline", "disk_direct", "bare", "ours")
_PROC = Path("/proc/self")


def _hwm_mb() -> float | None:
    """Peak RSS of this process since the last :func:`_reset_hwm` (None off Linux)."""
    try:
        status = (_PROC / "status").read_text()
    except OSError:
        return None
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (every CPU, user + system + interrupts,
    every process: the server's sendfile and the kernel's loopback work included), from
    ``/proc/stat`` (None off Linux)."""
    try:
        fields = (_PROC.parent / "stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    jiffies = [int(x) for x in fields]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _reset_hwm() -> None:
    with contextlib.suppress(OSError):
        (_PROC / "clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _expected_sha(size: int) -> str:
    digest = hashlib.sha256()
    for data, n in blocks(size):
        digest.update(memoryview(data)[:n])
    return digest.hexdigest()


async def _net(url: str, size: int) -> str:
    import aiohttp

    got = 0
    async with aiohttp.ClientSession() as session, session.get(url, read_bufsize=1 << 20) as r:
        async for chunk in r.content.iter_any():
            got += len(chunk)
    assert got == size, (got, size)
    return ""


async def _disk(where: Path, size: int, *, direct: bool = False) -> str:
    """Write the body to a new file and fsync it: buffered, or ``O_DIRECT`` from page-aligned
    copies of the blocks (no copy into the page cache, as ours does with full slots)."""
    pieces = [(memoryview(data), n) for data, n in blocks(size)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if direct:
        assert size % 4096 == 0
        aligned: dict[int, memoryview] = {}
        for i, (data, n) in enumerate(pieces):
            if id(data.obj) not in aligned:
                buf = mmap.mmap(-1, len(data))
                buf[:] = data
                aligned[id(data.obj)] = memoryview(buf)
            pieces[i] = (aligned[id(data.obj)], n)
    try:  # blocking on purpose: nothing else runs meanwhile
        fd = os.open(where / "disk.bin", flags | (getattr(os, "O_DIRECT", 0) if direct else 0))
    except OSError:  # no O_DIRECT on this file system: buffered
        fd = os.open(where / "disk.bin", flags)
    try:
        for data, n in pieces:
            view = data[:n]
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return ""


async def _sha(size: int) -> str:
    return _expected_sha(size)


async def _baseline(url: str, where: Path, size: int) -> str:
    import aiohttp

    path = where / "baseline.mp4"
    digest = hashlib.sha256()
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        with path.open("wb") as fh:
            async for chunk in r.content.iter_chunked(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    assert path.stat().st_size == size
    return digest.hexdigest()


class _Slots:
    """``bare``'s machinery: four 4 MiB page-aligned slots, a hashing and a writing thread."""

    BYTES = 4 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        import asyncio
        import queue
        import threading

        self.loop = asyncio.get_running_loop()
        self.free: asyncio.Queue[mmap.mmap] = asyncio.Queue()
        for _ in range(4):
            self.free.put_nowait(mmap.mmap(-1, self.BYTES))
        self.pending: dict[int, int] = {}  # id of a slot -> threads still using it
        self.digest = hashlib.sha256()
        self.direct = getattr(os, "O_DIRECT", 0)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | self.direct)
        self.queues: list[queue.SimpleQueue[tuple[mmap.mmap, int] | None]] = []
        self.threads: list[threading.Thread] = []
        for hashing in (True, False):
            q: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
            self.queues.append(q)
            self.threads.append(threading.Thread(target=self._work, args=(q, hashing)))
            self.threads[-1].start()

    def _work(self, q: Any, hashing: bool) -> None:
        while (item := q.get()) is not None:
            slot, n = item
            view = memoryview(slot)[:n]
            if hashing:
                self.digest.update(view)
            else:
                if n % 4096 and self.direct:  # O_DIRECT wants whole pages: the tail buffered
                    import fcntl

                    flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~self.direct)
                while view:
                    view = view[os.write(self.fd, view) :]
            view.release()
            self.loop.call_soon_threadsafe(self._done, slot)

    def _done(self, slot: mmap.mmap) -> None:  # on the loop: free once both threads are done
        self.pending[id(slot)] -= 1
        if not self.pending[id(slot)]:
            self.free.put_nowait(slot)

    def hand_over(self, slot: mmap.mmap, n: int) -> None:
        self.pending[id(slot)] = 2
        for q in self.queues:
            q.put((slot, n))

    async def finish(self) -> str:
        """Wait for both threads, fsync and close; the sha256."""
        import asyncio

        for q in self.queues:
            q.put(None)
        for thread in self.threads:
            await asyncio.to_thread(thread.join)
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
        return self.digest.hexdigest()


async def _bare(url: str, where: Path, size: int) -> str:
    import aiohttp

    pipe = _Slots(where / "bare.bin")
    slot, filled = await pipe.free.get(), 0
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            async for chunk in r.content.iter_any():
                view, at = memoryview(chunk), 0
                while at < len(view):
                    n = min(len(view) - at, pipe.BYTES - filled)
                    slot[filled : filled + n] = view[at : at + n]
                    filled, at = filled + n, at + n
                    if filled == pipe.BYTES:
                        pipe.hand_over(slot, filled)
                        slot, filled = await pipe.free.get(), 0
        if filled:
            pipe.hand_over(slot, filled)
    finally:
        digest = await pipe.finish()
    return digest


async def _ours(url: str, where: Path, size: int) -> str:
    from pipeline.providers.urlfetch import UrlFetcher, UrlPolicy
    from pipeline.transfer.download import write_verified

    async def record(_: object, publish: object) -> None:
        return None  # write_verified renames and fsyncs the directory itself

    host = url.split("//")[1].split("/")[0]
    fetcher = UrlFetcher(UrlPolicy(allow_hosts={host}, max_bytes=2 * size), provider="bench")
    try:
        async with fetcher.open(url) as download:
            final = where / "ours.mp4"
            art = await write_verified(download, final, max_bytes=2 * size, record=record)
    finally:
        await fetcher.aclose()
    assert art.size == size
    return art.sha256


async def _timed(step: Callable[[], Awaitable[str]], where: Path) -> dict[str, Any]:
    _reset_hwm()
    before = _hwm_mb()  # the RSS at the start (the peak was reset to it)
    busy0 = _machine_busy_s()
    cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.monotonic()
    digest = await step()
    seconds = time.monotonic() - t0
    loop_cpu = time.thread_time() - loop0
    busy1 = _machine_busy_s()
    # outside the timing: freeing 1 GiB of extents takes 0.2 s
    for path in where.iterdir():  # noqa: ASYNC240 (nothing else runs)
        path.unlink()
    return {
        "s": seconds,
        "cpu_s": time.process_time() - cpu0,
        "loop_cpu_s": loop_cpu,  # the event loop's thread (the rest: worker threads)
        "machine_cpu_s": None if busy0 is None or busy1 is None else busy1 - busy0,
        "rss_mb": _hwm_mb(),
        "rss_before_mb": before,
        "sha256": digest,
    }


def _spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "range": [round(min(values), digits), round(max(values), digits)],
    }


async def measure(quick: bool) -> dict[str, Any]:
    """Run the scenario: 1 GiB (256 MiB with ``quick``), 3 interleaved repeats."""
    size = (256 if quick else 1024) * 1024 * 1024
    load = os.getloadavg()
    server = subprocess.Popen(  # noqa: ASYNC220 (started before anything is measured)
        [sys.executable, str(ROOT / "benchmarks" / "download_server.py"), str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v.mp4"
        expected = _expected_sha(size)
        with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
            where = Path(tmp)
            steps: dict[str, Callable[[], Awaitable[str]]] = {
                "net": lambda: _net(url, size),
                "disk": lambda: _disk(where, size),
                "disk_direct": lambda: _disk(where, size, direct=True),
                "sha": lambda: _sha(size),
                "baseline": lambda: _baseline(url, where, size),
                "bare": lambda: _bare(url, where, size),
                "ours": lambda: _ours(url, where, size),
            }
            warm = 16 * 1024 * 1024  # imports, first connections: not in the first repeat
            await _timed(lambda: _ours(f"{url}?bytes={warm}", where, warm), where)
            runs: list[dict[str, dict[str, Any]]] = []
            for repeat in range(REPEATS):
                order = STEPS[repeat:] + STEPS[:repeat]
                runs.append({name: await _timed(steps[name], where) for name in order})
            small = size // 4  # ours at a quarter of the size: the same peak RSS
            small_run = await _timed(lambda: _ours(f"{url}?bytes={small}", where, small), where)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    for run in runs:
        for name in ("sha", "baseline", "bare", "ours"):
            assert run[name]["sha256"] == expected, name
    return _report(size, runs, small_run, load)


def _report(
    size: int, runs: list[dict[str, dict[str, Any]]], small: dict[str, Any], load: Any
) -> dict[str, Any]:
    mb = size / 1e6
    # the slowest of the three resources alone (the longest time) bounds a download using all;
    # the disk's time is that of its faster way (buffered or O_DIRECT) in the same repeat
    for r in runs:
        r["disk_best"] = min(r["disk"], r["disk_direct"], key=lambda x: float(x["s"]))
    slowest = [max(("net", "disk_best", "sha"), key=lambda k: float(r[k]["s"])) for r in runs]
    limit = [r[k]["s"] for k, r in zip(slowest, runs, strict=True)]
    # throughput ratios: a time ratio inverted
    vs_limit = [lim / r["ours"]["s"] for lim, r in zip(limit, runs, strict=True)]
    # The machine's bound: the three resources share its CPUs. Reading costs what the whole
    # machine spent on the network alone (the client's reads, the kernel's loopback, the
    # server), hashing and writing what they cost alone; spread perfectly over every CPU that
    # takes at least need / CPUs seconds, and never less than the slowest resource alone.
    cpus = os.cpu_count() or 1
    machine = []
    for lim, r in zip(limit, runs, strict=True):
        if r["net"]["machine_cpu_s"] is None:
            break
        need = r["net"]["machine_cpu_s"] + r["sha"]["cpu_s"] + r["disk_best"]["cpu_s"]
        machine.append(max(lim, need / cpus))
    vs_base = [r["baseline"]["s"] / r["ours"]["s"] for r in runs]
    vs_bare = [r["bare"]["s"] / r["ours"]["s"] for r in runs]
    ours_s = statistics.median(r["ours"]["s"] for r in runs)
    line: dict[str, Any] = {
        "shots": 1,
        "mb": round(mb, 1),
        "makespan_s": round(ours_s, 3),
        "bound_s": round(statistics.median(limit), 3),
        "makespan_ratio": round(ours_s / statistics.median(limit), 4),
        "cpu_ms_per_shot": None,
        "polls_per_job": None,
        "ours_vs_limit": _spread(vs_limit),
        "ours_vs_baseline": _spread(vs_base),
        "ours_vs_bare": _spread(vs_bare),
        "machine_bound_s": _spread(machine) if machine else None,
        "ours_vs_machine_bound": (
            _spread([m / r["ours"]["s"] for m, r in zip(machine, runs, strict=False)])
            if machine
            else None
        ),
        "load_avg_at_start": [round(x, 2) for x in load],
    }
    for name in STEPS:
        line[f"{name}_mb_s"] = _spread([mb / r[name]["s"] for r in runs], 1)
        line[f"{name}_cpu_s"] = _spread([r[name]["cpu_s"] for r in runs], 2)
        line[f"{name}_loop_cpu_s"] = _spread([r[name]["loop_cpu_s"] for r in runs], 2)
        busy = [r[name]["machine_cpu_s"] for r in runs if r[name]["machine_cpu_s"] is not None]
        line[f"{name}_machine_cpu_s"] = _spread(busy, 2) if busy else None
        rss = [r[name]["rss_mb"] for r in runs if r[name]["rss_mb"] is not None]
        line[f"{name}_peak_rss_mb"] = round(max(rss), 1) if rss else None
    line["limit_step"] = [k.replace("_best", "") for k in slowest]
    line["ours_quarter_size_peak_rss_mb"] = small["rss_mb"]
    # what the download itself adds to the process's RSS, at the size and at a quarter of it
    grown = [r["ours"]["rss_mb"] - r["ours"]["rss_before_mb"] for r in runs if r["ours"]["rss_mb"]]
    line["ours_rss_growth_mb"] = round(max(grown), 1) if grown else None
    if small["rss_mb"] is not None:
        line["ours_quarter_size_rss_growth_mb"] = round(small["rss_mb"] - small["rss_before_mb"], 1)
    return line
