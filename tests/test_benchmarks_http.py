"""Smoke test of the HTTP makespan benchmark (benchmarks/http_bench.py) at a tiny size.

It runs the real harness (fake provider in its own process, ``pipeline run`` and the two
scripts as subprocesses) on 6 shots at 1:100 time, and checks the shape of what it reports and
that every shot was fetched. No timing is asserted: the machine may be busy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import http_bench, report
from pipeline.sim.common import SimConfig

FIELDS = {
    "variant",
    "shots",
    "submits",
    "fetched",
    "makespan_s",
    "bound_s",
    "makespan_ratio",
    "wall_s",
    "polls_per_job",
    "cpu_ms_per_shot",
    "net_cpu_ms_per_shot",
    "startup_cpu_ms",
}


@pytest.mark.slow
def test_quick_http_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--quick", "--shots", "6", "--slots", "3", "--scale", "0.01", "--out", str(tmp_path)]
    assert http_bench.main(argv) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (path,) = tmp_path.glob("*-http-quick.json")
    document = json.loads(path.read_text())
    assert document["machine"]["cpus"]
    assert document["machine"]["python"]
    lines = document["results"]
    assert printed[:-1] == lines  # one JSON line per measurement, then the summary
    assert sorted(line["variant"] for line in lines) == sorted(http_bench.VARIANTS)
    for line in lines:
        assert set(line) >= FIELDS, line
        assert "error" not in line, line["error"]
        assert line["exit_code"] == 0
        assert line["submits"] == line["fetched"] == 6
        assert line["polls_per_job"] >= 1
    assert set(document["summary"]) == set(http_bench.VARIANTS)
    table = report.table(document)
    assert "`pipeline run`" in table
    assert "script, 5 s poll" in table
    assert "after one earlier run" in table
    assert "polls per job" in table


def test_bound_is_list_scheduling() -> None:
    assert http_bench.bound([1.0] * 5, 2) == 3.0  # ceil(5 / 2) x 1
    assert http_bench.bound([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # the short ones share a slot
    assert http_bench.bound([1.0, 1.0], 2, spacing=0.5) == 1.5  # a submit rate delays the 2nd


def test_sim_latency_is_drawn_per_prompt() -> None:
    config = SimConfig(latency_s=2.0, latency_max_s=10.0, latency_seed=7)
    draws = [config.latency_for(f"bench shot {i}") for i in range(200)]
    assert all(2.0 <= x <= 10.0 for x in draws)
    assert len(set(draws)) == 200
    assert draws[5] == SimConfig(latency_s=2.0, latency_max_s=10.0, latency_seed=7).latency_for(
        "bench shot 5"
    )  # the same shot, the same latency: whoever submits it, in any order
    assert SimConfig(latency_s=0.5).latency_for("anything") == 0.5  # fixed by default
