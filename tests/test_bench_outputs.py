"""Smoke test of the outputs benchmark (benchmarks/bench_outputs.py) at a tiny size.

It synthesizes a run of 4 takes and times a cold, a no-op and a pick rebuild once, then checks
the shape of what it writes and what the rebuilds did (from the cache's log line). No timing is
asserted: the machine may be busy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_outputs


def test_quick_outputs_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--shots", "4", "--repeats", "1", "--clips", "tiny", "--out", str(tmp_path)]
    assert bench_outputs.main(argv) == 0
    (path,) = tmp_path.glob("*-outputs.json")
    document = json.loads(path.read_text())
    assert document["machine"]["cpus"]
    assert document["settings"]["clips"] == "tiny"
    lines = document["results"]
    assert [line["step"] for line in lines] == ["cold", "noop", "pick"]
    cold, noop, pick = lines
    for line in lines:
        assert line["takes"] == 4
        assert line["wall_s"] >= 0
        assert line["animatic_frames"] > 0
    assert "made poster 4" in cold["cache"]
    assert noop["cache"] == "kept animatic 1, poster 4, sheet 1"
    assert "made segment 1" in pick["cache"]  # the picked take, nothing else
    assert "made poster" not in pick["cache"]
    out = capsys.readouterr().out
    assert "| tiny, 4, noop, s |" in out
    assert bench_outputs.main(["--table", str(path)]) == 0
    assert "after (tiny clips, [4] takes)" in capsys.readouterr().out
