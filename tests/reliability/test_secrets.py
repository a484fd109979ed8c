"""R12 (secrets never leave memory) and R13 (shot ids cannot escape the run directory)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import sim
from pipeline.engine.context import output_path
from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.errors import ManifestError
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.sim.common import FAULTS, Fault, FaultKind, SimConfig
from tests.fakes import FakeService, fake_spec


def _grep(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


async def test_r12_api_key_and_signed_urls_appear_nowhere_but_the_checkpoint(
    tmp_path: Path,
) -> None:
    key = f"sk-canary-{uuid.uuid4().hex}"
    token = f"canary2-{uuid.uuid4().hex}"
    config = SimConfig(api_key=key, latency_s=0.2)
    names = {"venice", "relaydance", "newapi"}
    async with sim.running(names, config=config) as sims:
        sims["relaydance"].app[FAULTS].add(Fault("poll", FaultKind.SERVER_ERROR, times=2))
        hosts = ", ".join(r.base_url.split("/")[2] for r in sims.values())
        providers = "\n".join(
            f"  {n}: {{base_url: '{r.base_url}', poll_min_s: 0.05, poll_max_s: 0.2}}"
            for n, r in sims.items()
        )
        image = f"https://cdn.example.com/pier.png?token={token}"
        (tmp_path / "m.yaml").write_text(
            "version: 1\nname: canary\n"
            f"providers:\n{providers}\ndownloads: {{allow_hosts: [{hosts}]}}\n"
            "scenes:\n  - id: a\n    shots:\n"
            "      - {id: v1, provider: venice, model: wan-2-7-image-to-video, "
            f"prompt: 'wide shot at dawn', image: '{image}', duration: 5}}\n"
            "      - {id: r1, provider: relaydance, prompt: 'harbour at night', duration: 5}\n"
            "      - {id: r2, provider: relaydance, prompt: 'FAIL_ME on purpose', duration: 5}\n"
            "      - {id: n1, provider: newapi, model: viduq3p-720p, prompt: 'market', "
            "duration: 4}\n"
        )
        env = {
            **os.environ,
            "VENICE_API_KEY": key,
            "RELAYDANCE_API_KEY": key,
            "NEWAPI_API_KEY": key,
        }
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "m.yaml",
            "-v",
            "--no-progress",
            "--trust-endpoints",
        ]
        res = await anyio.run_process(command, cwd=tmp_path, env=env, check=False)
        run_dir = tmp_path / "jobs" / "canary"
        status = await anyio.run_process(
            [sys.executable, "-m", "pipeline", "status", str(run_dir), "--json"],
            env=env,
            check=False,
        )
    out, err, status_out = res.stdout.decode(), res.stderr.decode(), status.stdout.decode()
    assert res.returncode == 1, out + err  # r2 failed on purpose; the others are done
    states = {s["id"]: s["state"] for s in json.loads(status_out)["shots"]}
    assert states == {"a-v1": "done", "a-r1": "done", "a-r2": "failed", "a-n1": "done"}
    assert "INFO" in err  # verbose logging was on
    # The key: nowhere at all (outputs, logs, checkpoint, status).
    for text in (out, err, status_out):
        assert key not in text
    assert _grep(run_dir, key) == []
    # Signed URLs (ours and the provider's result URLs): only in the 0600 checkpoint.
    checkpoint = (run_dir / "checkpoint.jsonl").read_text()
    signatures = [
        part.split("&")[0]
        for part in checkpoint.split("sig=")[1:]  # relaydance result URLs carry ?...&sig=...
    ]
    assert signatures
    for secret in [token, *signatures]:
        for text in (out, err, status_out):
            assert secret not in text
        assert set(_grep(run_dir, secret)) <= {"checkpoint.jsonl"}
    assert oct((run_dir / "checkpoint.jsonl").stat().st_mode & 0o777) == "0o600"


HOSTILE = [
    "../x",
    "/etc/x",
    "a/../../b",
    "..\\x",
    "C:x",
    "a\0b",
    ".hidden",
    "x" * 300,
    "s\u0430",  # a Cyrillic look-alike
    "CON",
    "",
]


def _load_with_id(tmp_path: Path, shot_id: str) -> list[str]:
    service = FakeService()
    registry = {"fake": fake_spec(service)}
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: paths\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        "scenes:\n  - id: a\n    shots:\n"
        f"      - {{id: {json.dumps(shot_id)}, prompt: p}}\n"
        "      - {id: S1, prompt: q}\n"
    )
    try:
        m = load_manifest(path, registry=registry)
    except ManifestError:
        return []
    return [s.id for s in m.shots]


@pytest.mark.parametrize("shot_id", HOSTILE)
def test_r13_hostile_shot_ids_are_refused(tmp_path: Path, shot_id: str) -> None:
    ids = _load_with_id(tmp_path, shot_id)
    run_dir = tmp_path / "run"
    for sid in ids:  # whatever is accepted is a safe, unique file name under shots/
        path = output_path(run_dir, sid)
        assert path.parent == run_dir / "shots"
        assert path.resolve().is_relative_to((run_dir / "shots").resolve())
    assert len({i.lower() for i in ids}) == len(ids)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_r13_any_text_as_a_shot_id_stays_under_the_run_directory(shot_id: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ids = _load_with_id(tmp_path, shot_id)
        for sid in ids:
            path = output_path(tmp_path / "run", sid)
            assert path.resolve().is_relative_to((tmp_path / "run" / "shots").resolve())
        assert len({i.lower() for i in ids}) == len(ids)


async def test_r13_symlinks_planted_in_the_run_directory_are_refused(tmp_path: Path) -> None:
    service = FakeService()
    registry = {"fake": fake_spec(service)}
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: links\ndefaults: {provider: fake, model: m1, duration: 2}\n"
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: p}\n      - {id: s2, prompt: q}\n"
    )
    m = load_manifest(path, registry=registry)
    run_dir = tmp_path / "jobs" / "links"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run_dir / "shots").mkdir(parents=True)
    (run_dir / "shots" / "a-s1.mp4").symlink_to(victim)  # at the output name
    result = await execute(m, run_dir, RunOptions(registry=registry))
    assert victim.read_text() == "precious"
    assert (run_dir / "shots" / "a-s1.mp4").is_symlink()
    assert result.state.shots["a-s1"].state == ShotState.FETCHING  # not done through a link
    assert result.state.shots["a-s2"].state == ShotState.DONE
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "jobs" / "other"
    other.mkdir()
    (other / "shots").symlink_to(elsewhere, target_is_directory=True)  # as the shots dir
    result2 = await execute(m, other, RunOptions(registry=registry))
    assert list(elsewhere.iterdir()) == []
    assert {r.state for r in result2.state.shots.values()} == {ShotState.FETCHING}
