"""`pipeline pick` takes a take as 1, t1 or T1; cancelled shots are not a failure (exit 0) and
`--retry-failed --shot ID` revives one (and only the one named)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from pipeline.cli.main import main
from pipeline.engine.actions import cancel
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.state import replay
from pipeline.manifest.loader import load_manifest
from pipeline.models import Event, ShotState


def _manifest(path: Path, latency_s: float, takes: int = 1) -> Path:
    path.write_text(
        "version: 1\nname: pc\ndefaults: {provider: local, duration: 1}\n"
        f"providers: {{local: {{latency_s: {latency_s}}}}}\n"
        "scenes:\n  - id: a\n    shots:\n"
        f"      - {{id: s1, prompt: one, takes: {takes}}}\n      - {{id: s2, prompt: two}}\n"
    )
    return path


def _states(run_dir: Path) -> dict[str, ShotState]:
    state = replay(load(run_dir / FILE, repair=False).records)
    return {sid: rec.state for sid, rec in state.shots.items()}


def test_pick_takes_1_t1_or_T1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = load_manifest(_manifest(tmp_path / "m.yaml", 0, takes=2))
    run_dir = tmp_path / "jobs" / "pc"
    assert anyio.run(execute, manifest, run_dir, RunOptions()).exit_code == 0
    capsys.readouterr()
    for take, number in (("T2", 2), ("t1", 1), ("2", 2)):
        assert main(["pick", str(run_dir), "a-s1", take]) == 0
        assert f"a-s1: take {number} chosen" in capsys.readouterr().out
        assert json.loads((run_dir / "picks.json").read_text()) == {"a-s1": number}
    for bad in ("x2", "t0", "0", "tt1", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            main(["pick", str(run_dir), "a-s1", bad])
        assert exit_info.value.code == 2
        assert "is not a take: write 1, t1 or T1" in capsys.readouterr().err
    assert json.loads((run_dir / "picks.json").read_text()) == {"a-s1": 2}


def _submitted(run_dir: Path) -> int:
    if not (run_dir / FILE).exists():
        return 0
    return sum(r.ev == Event.SUBMITTED for r in load(run_dir / FILE, repair=False).records)


async def _run_then_cancel(path: Path, run_dir: Path) -> int:
    manifest = load_manifest(path)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(execute, manifest, run_dir, RunOptions())
            while _submitted(run_dir) < 2:  # noqa: ASYNC110 (polling a file, not an event)
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()  # the runner stops; both jobs wait at the provider
    result = await cancel(manifest, run_dir, RunOptions())
    return result.exit_code


def test_cancelled_shots_exit_0_and_retry_failed_shot_revives_one(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "m.yaml", 600)  # jobs that would wait for ten minutes
    run_dir = tmp_path / "jobs" / "pc"
    assert anyio.run(_run_then_cancel, path, run_dir) == 0  # cancelled on purpose: exit 0
    assert _states(run_dir) == {"a-s1": ShotState.CANCELLED, "a-s2": ShotState.CANCELLED}

    _manifest(path, 0)  # the same shots (same fingerprints), a provider that answers at once
    assert main(["resume", str(run_dir), "--no-progress"]) == 0
    assert main(["resume", str(run_dir), "--retry-failed", "--no-progress"]) == 0
    assert _states(run_dir) == {"a-s1": ShotState.CANCELLED, "a-s2": ShotState.CANCELLED}
    assert _submitted(run_dir) == 2  # nothing was sent again

    argv = ["resume", str(run_dir), "--retry-failed", "--shot", "a-s1", "--no-progress"]
    assert main(argv) == 0
    assert _states(run_dir) == {"a-s1": ShotState.DONE, "a-s2": ShotState.CANCELLED}
    assert _submitted(run_dir) == 3  # a new attempt for a-s1 only
    assert (run_dir / "shots" / "a-s1.mp4").is_file()
