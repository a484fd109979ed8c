"""When to poll a job next, learned from the completion times seen so far.

Most providers say nothing about when a job will be done, and polling on a fixed backoff
spends most polls before any job could have finished and finds the rest late. So the runner
keeps, per provider and model, the completion times it has seen (seconds from submit until a
poll found the job done; this run's, plus earlier runs' from a small history file), and plans
each job's polls from them:

- **first poll where the fastest jobs finish** (the 2nd percentile of what was seen): before
  that, a poll can only say "running";
- **then intervals that shrink as the job nears the observed quantiles**: the wait at elapsed
  time ``t`` is ``sqrt(BETA * median * spread(t))``, where ``spread(t)`` is twice the distance
  from ``t`` to the median of the times still ahead of it (for a uniform spread of times it is
  the time left until the slowest one). This is the classic inspection rule (polling density
  proportional to the square root of the hazard rate, Keller 1974): dense where jobs are likely
  to finish, sparse where they are not. ``BETA`` sets the trade: with times spread evenly over
  20-100 s it gives about 12.6 polls a job found 1.6 s late on average (2.7 % of the median),
  where a fixed 5 s poll takes 13 polls and is 2.5 s late, and a fixed 2 s poll 30 polls for
  1 s. For this spread no schedule without a hint from the provider does much better: evenly
  spaced polls need 13 for 1.75 s and 15 for 1.5 s (README, "Performance");
- a job older than nearly all seen so far (a straggler), or a provider with too few samples
  yet, falls back to a backoff of x1.25 from the last wait (from ``poll_min_s`` at first),
  never longer than :data:`LATE_SHARE` of the job's age, so that a job is found at most about
  10 % after it finished even when nothing is known: on a fresh machine the first jobs are all
  "stragglers" (only the fastest have finished), and a plain backoff found them seconds late,
  which every later job on the same slot inherits;
- a provider's own ETA (Venice) is one more input, never trusted alone: the wait is the shorter
  of the learned one and "just after the ETA";
- every wait stays within ``[poll_min_s, poll_max_s]`` and is spread by +-10 % so that jobs
  submitted together do not poll in lockstep; the provider's polls-per-minute stay the gate's
  (``engine.limits``), and the caller widens the floor when the jobs in flight would exceed it.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import random
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline._util.fsutil import replacing
from pipeline.settings import PollPolicy

log = logging.getLogger("pipeline")

#: The trade between polls and lateness (see the module docstring), in units of the median.
BETA = 0.0045
#: Completion times needed before they are trusted (fewer: the backoff).
MIN_SAMPLES = 3
#: Completion times kept per provider and model (the most recent ones).
KEEP = 512
#: Where the first poll of a job goes: this quantile of the completion times seen.
FIRST_QUANTILE = 0.02
#: Growth of the wait where nothing is known (cold start, stragglers).
BACKOFF = 1.25
#: Where nothing is known (cold start, stragglers), no wait exceeds this share of the job's age.
LATE_SHARE = 0.1
#: Spread of each wait (+-), so that jobs submitted together do not poll together.
JITTER = 0.1


class CompletionTimes:
    """The completion times of one provider and model, in seconds from submit.

    The most recent :data:`KEEP` are held, kept sorted for quantile queries.
    """

    def __init__(self, seconds: Iterable[float] = ()) -> None:
        self._recent: deque[float] = deque(maxlen=KEEP)
        self._sorted: list[float] = []
        for value in seconds:
            self.add(value)

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, seconds: float) -> None:
        """Record one completion time (the oldest one goes when :data:`KEEP` are held)."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        if len(self._recent) == KEEP:
            oldest = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def recent(self) -> list[float]:
        """The times held, oldest first (what the history file keeps)."""
        return list(self._recent)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0-1) of the times held (nearest rank); needs at least one."""
        values = self._sorted
        return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]

    def spread_after(self, elapsed: float) -> float | None:
        """Twice the distance from ``elapsed`` to the median of the times beyond it.

        None when fewer than :data:`MIN_SAMPLES` times lie beyond ``elapsed`` (a straggler).
        """
        values = self._sorted
        start = bisect.bisect_right(values, elapsed)
        ahead = len(values) - start
        if ahead < MIN_SAMPLES:
            return None
        return 2.0 * (values[start + ahead // 2] - elapsed)


def first_delay(elapsed: float, times: CompletionTimes | None, policy: PollPolicy) -> float:
    """Seconds to wait before the first poll of a job submitted ``elapsed`` seconds ago.

    At the fastest completion times seen when there are enough of them, else ``poll_min_s``
    after the submit; 0 for a job already older than that (a resumed run polls it at once).
    """
    if times is not None and len(times) >= MIN_SAMPLES:
        target = max(times.quantile(FIRST_QUANTILE), policy.min_s)
    else:
        target = policy.min_s
    return max(0.0, min(target - elapsed, policy.max_s))


def next_delay(
    elapsed: float,
    last: float,
    times: CompletionTimes | None,
    policy: PollPolicy,
    floor: float,
    eta_s: float | None = None,
) -> float:
    """Seconds until the next poll of a job that is ``elapsed`` seconds old and not done.

    Args:
        elapsed: seconds since the job's submit.
        last: the previous wait, in seconds (the backoff grows from it).
        times: completion times seen for the job's provider and model (None: none yet).
        policy: ``poll_min_s`` / ``poll_max_s`` (the bounds of every wait).
        floor: the shortest wait allowed now (``poll_min_s``, or more when the provider's
            polls-per-minute are shared by many jobs).
        eta_s: the provider's estimate of the seconds left, if it gives one.

    Returns:
        The wait in seconds, within ``[floor, poll_max_s]`` (``floor`` wins if larger).
    """
    ceiling = max(policy.max_s, floor)
    wait: float | None = None
    if times is not None and len(times) >= MIN_SAMPLES:
        low = times.quantile(FIRST_QUANTILE)
        if elapsed < low:
            wait = low - elapsed
        elif (spread := times.spread_after(elapsed)) is not None:
            wait = math.sqrt(BETA * times.quantile(0.5) * spread)
    if wait is None:
        wait = min(last * BACKOFF, max(LATE_SHARE * elapsed, floor))
    if eta_s is not None and eta_s > 0:
        # Just after the provider's estimate, late by at most min(10 %, the floor): never
        # later than what was learned.
        wait = min(wait, eta_s + random.uniform(0.0, min(0.1 * eta_s, floor)))
    else:
        wait *= random.uniform(1.0 - JITTER, 1.0 + JITTER)
    return min(max(wait, floor), ceiling)


class History:
    """Completion times by provider and model, for this run and across runs.

    With a ``path``, read at the start and written back (atomically) at the end.

    The file (JSON, ``{"v": 1, "times": {"<provider>/<model>": [seconds, ...]}}``) holds no
    secret; an unreadable one is ignored (logged at debug level).
    """

    def __init__(self, path: Path | None = None, *, simulated: bool = False) -> None:
        self.path = path
        self._prefix = "sim:" if simulated else ""  # a rehearsal's times are not a provider's
        self._times: dict[str, CompletionTimes] = {}
        if path is not None:
            self._times = {k: CompletionTimes(v) for k, v in _read(path).items()}

    def times(self, provider: str, model: str) -> CompletionTimes:
        """The completion times of ``provider`` and ``model`` (created empty when new)."""
        key = f"{self._prefix}{provider}/{model}"
        found = self._times.get(key)
        if found is None:
            found = self._times[key] = CompletionTimes()
        return found

    def save(self) -> None:
        """Write the history file (no-op without a path); failures are logged, not raised."""
        if self.path is None:
            return
        data = {"v": 1, "times": {k: t.recent() for k, t in self._times.items() if len(t)}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(self.path) as tmp:
                tmp.write_text(json.dumps(data, separators=(",", ":")))
        except OSError as exc:
            log.debug("completion history not saved to %s: %s", self.path, exc)


def _read(path: Path) -> Mapping[str, list[float]]:
    try:
        data = json.loads(path.read_text())
        times = data["times"] if data.get("v") == 1 else {}
        return {
            str(k): [float(x) for x in v if isinstance(x, int | float)]
            for k, v in times.items()
            if isinstance(v, list)
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("completion history %s ignored: %s", path, exc)
        return {}


def default_path() -> Path:
    """``$XDG_CACHE_HOME/pipeline/completions.json`` (else ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pipeline" / "completions.json"
