"""The library face: ``import pipeline`` drives a batch without the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import pipeline
from pipeline.models import ShotState


def _manifest(tmp_path: Path, shots: int = 3) -> Path:
    lines = "".join(f"      - {{id: s{i}, prompt: 'harbor at dawn {i}'}}\n" for i in range(shots))
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: lib\n"
        "defaults: {provider: local, duration: 1, aspect_ratio: '16:9'}\n"
        "providers:\n  local: {latency_s: 0}\n"
        "scenes:\n  - id: a\n    shots:\n" + lines
    )
    return path


def test_import_pipeline_is_cheap_and_lists_its_face() -> None:
    code = (
        "import sys, pipeline\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'av', 'PIL', 'pydantic', 'yaml') or m.startswith('pipeline.'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    for name in pipeline.__all__:
        value = getattr(pipeline, name)
        assert name == "__version__" or value.__doc__, name
    with pytest.raises(AttributeError):
        _ = getattr(pipeline, "no_such_name")  # noqa: B009


@pytest.mark.anyio
async def test_run_status_resume_through_the_library(tmp_path: Path) -> None:
    manifest = pipeline.load_manifest(_manifest(tmp_path))
    result = await pipeline.run(manifest, jobs_dir=tmp_path / "jobs")
    assert result.exit_code == 0
    run_dir = tmp_path / "jobs" / "lib"
    state = pipeline.status(run_dir)
    assert {r.state for r in state.shots.values()} == {ShotState.DONE}
    assert len(list((run_dir / "shots").glob("*.mp4"))) == 3
    assert (run_dir / "storyboard.html").is_file()  # outputs written
    before = (run_dir / "checkpoint.jsonl").read_bytes()
    again = await pipeline.resume(run_dir)
    assert again.exit_code == 0
    assert {r.state for r in again.state.shots.values()} == {ShotState.DONE}
    after = (run_dir / "checkpoint.jsonl").read_bytes()
    assert b"submit_intent" not in after[len(before) :]  # nothing submitted again


@pytest.mark.anyio
async def test_a_path_and_a_simulated_run(tmp_path: Path) -> None:
    path = _manifest(tmp_path, shots=1)
    seen: list[Mapping[str, str]] = []
    result = await pipeline.run(path, tmp_path / "run", simulate=True, announce=seen.append)
    assert result.exit_code == 0
    assert seen == []  # `local` needs no simulator: nothing to announce
    assert pipeline.status(tmp_path / "run").simulated


def test_status_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(pipeline.UsageError, match="does not exist"):
        pipeline.status(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pipeline.UsageError, match="not a run directory"):
        pipeline.status(tmp_path / "empty")
