"""A Markdown table of one ``benchmarks/http_bench.py`` results file, for the README.

    python benchmarks/report.py [RESULTS.json]     (default: the newest *-http.json)

One row per figure; one column per client (``pipeline run``, then the 2 s and 5 s scripts
beside it), each cell the median over the repeats and its spread (min-max); the makespan row
also gives each script's median makespan as a multiple of ours. The medians and spreads are
recomputed from the per-run lines, not copied from the file's summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = {
    "ours": "`pipeline run`",
    "ours_warm": "`pipeline run`, after one earlier run",
    "script_2s": "script, 2 s poll",
    "script_5s": "script, 5 s poll",
}
#: (field, row label, digits)
ROWS = (
    ("makespan_ratio", "makespan / bound", 3),
    ("makespan_s", "makespan, s (first submit to last video)", 1),
    ("wall_s", "wall time of the client process, s", 1),
    ("polls_per_job", "polls per job", 1),
    ("late_s", "job done -> seen done (median), s", 2),
    ("before_first_submit_s", "start to first submit, s", 2),
    ("after_last_fetch_s", "last video to exit, s", 2),
    ("run_cpu_ms_per_shot", "CPU per shot, first submit to last video, ms", 2),
    ("cpu_ms_per_shot", "CPU per shot, whole process, ms", 1),
    ("net_cpu_ms_per_shot", "CPU per shot, whole process less start-up, ms", 1),
    ("startup_cpu_ms", "start-up CPU (validate / --shots 0), ms", 0),
    ("cpu_after_last_fetch_ms", "CPU after the last video, ms", 0),
)


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    text = f"**{median:.{digits}f}**"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return text


def table(document: dict[str, Any]) -> str:
    """The Markdown table (and a line saying what was run, where and how busy it was)."""
    runs = [r for r in document["results"] if "error" not in r]
    by: dict[str, list[dict[str, Any]]] = {
        v: [r for r in runs if r["variant"] == v] for v in COLUMNS
    }
    present = [v for v in COLUMNS if by[v]]
    head = "| figure | " + " | ".join(COLUMNS[v] for v in present) + " |"
    lines = [head, "|---" * (len(present) + 1) + "|"]
    ours = [r["makespan_s"] for r in by.get("ours", []) if r.get("makespan_s")]
    for key, label, digits in ROWS:
        cells = []
        for variant in present:
            values = [r[key] for r in by[variant] if r.get(key) is not None]
            cell = _cell(values, digits)
            if key == "makespan_s" and variant != "ours" and ours and values:
                vs = statistics.median(values) / statistics.median(ours)
                cell += f"; {vs:.3f} x ours"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([_caption(document, runs), "", *lines])


def _caption(document: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    s, m = document["settings"], document["machine"]
    scale = s["scale"]
    rpm = f", {s['rpm']:g} submits/min" if s.get("rpm") else ""
    failed = len(document["results"]) - len(runs)
    return (
        f"{s['shots']} shots, {s['slots']} in flight, jobs {20 * scale:g}-{100 * scale:g} s "
        f"(20-100 s scaled 1:{1 / scale:g}){rpm}; {s['repeats']} interleaved run(s) of each "
        f"client, median (min-max); {m['cpus']} CPUs, Python {m['python']}, load average "
        f"{m['loadavg_before'][0]:g} before and {m.get('loadavg_after', ['?'])[0]} after; "
        f"{m['when']}, {m.get('git', '?')}"
        + (f"; {failed} failed run(s) left out" if failed else "")
    )


def newest() -> Path:
    files = sorted(RESULTS.glob("*-http.json"))
    if not files:
        raise SystemExit(f"no *-http.json in {RESULTS}: run benchmarks/http_bench.py first")
    return files[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="?", help="a results file (default: newest)")
    args = parser.parse_args(argv)
    path = args.results or newest()
    print(f"<!-- {path.name} -->")
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
