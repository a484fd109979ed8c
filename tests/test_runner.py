"""The runner's stage machine against an in-memory provider: money rules, resume, limits."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from PIL import Image

from pipeline.engine.options import EXIT_ATTENTION, EXIT_OK, RunOptions, RunResult
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import load
from pipeline.manifest.loader import Manifest, load_manifest
from pipeline.models import ShotState
from pipeline.providers.base import ProviderSpec
from tests.fakes import FakeService, fake_spec, video


def write_manifest(
    tmp_path: Path,
    n: int = 3,
    *,
    prompt: str = "a gull",
    image: bool = False,
    extra_shot: str = "",
    providers: str = "",
) -> Path:
    if image:
        Image.new("RGB", (64, 36), (200, 40, 40)).save(tmp_path / "frame.png")
    shots = []
    for i in range(1, n + 1):
        shot = f'      - id: s{i:02d}\n        prompt: "{prompt} {i}"\n'
        if image:
            shot += "        image: frame.png\n"
        shot += extra_shot
        shots.append(shot)
    text = (
        "version: 1\nname: test-run\ndefaults:\n  provider: fake\n  model: m1\n  duration: 2\n"
        + providers
        + "scenes:\n  - id: sc\n    shots:\n"
        + "".join(shots)
    )
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return path


def manifest_for(path: Path, registry: Mapping[str, ProviderSpec]) -> Manifest:
    return load_manifest(path, registry=registry)


async def run(
    path: Path,
    service: FakeService,
    *,
    reconcile: bool = True,
    max_in_flight: int = 3,
    **opts: object,
) -> RunResult:
    registry = {"fake": fake_spec(service, max_in_flight=max_in_flight, reconcile=reconcile)}
    manifest = manifest_for(path, registry)
    options = RunOptions(registry=registry, **opts)  # type: ignore[arg-type]
    return await execute(manifest, path.parent / "jobs" / manifest.name, options)


def events(run_dir: Path, ev: str, shot: str | None = None) -> list[dict[str, object]]:
    recs = load(run_dir / "checkpoint.jsonl", repair=False).records
    return [
        {"shot": r.shot, **r.data}
        for r in recs
        if r.ev.value == ev and (shot is None or r.shot == shot)
    ]


def run_dir_of(path: Path) -> Path:
    return path.parent / "jobs" / "test-run"


async def test_happy_path_writes_verified_files_and_charges_once(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 5)
    service = FakeService()
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert sorted(service.ledger) == [f"sc-s{i:02d}" for i in range(1, 6)]
    rd = run_dir_of(path)
    for i in range(1, 6):
        sid = f"sc-s{i:02d}"
        (submitted,) = events(rd, "submitted", sid)
        assert (rd / "shots" / f"{sid}.mp4").read_bytes() == video(str(submitted["job"]))
    assert not list((rd / "shots").glob("*.part"))
    assert oct((rd / "checkpoint.jsonl").stat().st_mode & 0o777) == "0o600"


async def test_in_flight_cap_is_respected_and_filled(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 20)
    service = FakeService(polls_to_finish=3)
    result = await run(path, service, max_in_flight=3)
    assert result.exit_code == EXIT_OK
    assert service.max_in_flight == 3  # never above the cap, and the cap was used


async def test_not_sent_is_retried_as_the_same_attempt(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1)
    service = FakeService(submit_faults=["not_sent", "rate"])
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert service.ledger == ["sc-s01"]
    rd = run_dir_of(path)
    intents = events(rd, "submit_intent")
    assert len(intents) == 3
    assert len({i["key"] for i in intents}) == 1  # same attempt, same key
    assert len(events(rd, "submit_not_sent")) == 2


async def test_rejected_submit_fails_uncharged_without_retry(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1)
    service = FakeService(submit_faults=["reject"])
    result = await run(path, service)
    assert result.exit_code == EXIT_ATTENTION
    rec = result.state.shots["sc-s01"]
    assert rec.state == ShotState.FAILED
    assert rec.charged == "no"
    assert service.submits == 1


async def test_ambiguous_submit_is_never_resubmitted_without_consent(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1)
    service = FakeService(submit_faults=["ambiguous"])
    first = await run(path, service)
    assert first.state.shots["sc-s01"].state == ShotState.NEEDS_RECONCILE
    assert first.exit_code == EXIT_ATTENTION
    again = await run(path, service)
    assert again.state.shots["sc-s01"].state == ShotState.NEEDS_RECONCILE
    assert service.ledger == ["sc-s01"]  # still one charge
    forced = await run(path, service, resubmit_ambiguous=frozenset({"sc-s01"}))
    assert forced.exit_code == EXIT_OK
    assert service.ledger == ["sc-s01", "sc-s01"]
    keys = [i["key"] for i in events(run_dir_of(path), "submit_intent")]
    assert keys[0] != keys[1]
    assert str(keys[1]).endswith(":2")


async def test_provider_failure_is_recorded_with_refund(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 2)
    service = FakeService(fail_shots={"sc-s02"})
    result = await run(path, service)
    rec = result.state.shots["sc-s02"]
    assert rec.state == ShotState.FAILED
    assert rec.charged == "no"
    assert result.state.shots["sc-s01"].state == ShotState.DONE
    retried = await run(path, service, retry_failed=True)
    assert retried.state.shots["sc-s02"].state == ShotState.FAILED  # fails again, new attempt
    assert service.ledger.count("sc-s02") == 2


async def test_expired_result_url_is_refreshed_by_polling_not_resubmitting(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1)
    service = FakeService(expire_fetches=2)
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert service.ledger == ["sc-s01"]


async def _intent_without_outcome(
    tmp_path: Path, service: FakeService, *, job_exists: bool, reconcile: bool
) -> RunResult:
    """Simulate a crash between the durable intent and the submit's outcome."""
    path = write_manifest(tmp_path, 1)
    service.submit_faults = ["lost"]
    await run(path, service, reconcile=reconcile)
    rd = run_dir_of(path)
    # Rewrite the log as the crash would have left it: drop everything after the intent.
    lines = (rd / "checkpoint.jsonl").read_bytes().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if b'"submit_intent"' in line)
    (rd / "checkpoint.jsonl").write_bytes(b"".join(lines[: cut + 1]))
    if not job_exists:
        service.jobs.clear()
        service.ledger.clear()
        service.in_flight = 0
    return await run(path, service, reconcile=reconcile)


async def test_resume_adopts_the_job_a_lost_response_created(tmp_path: Path) -> None:
    service = FakeService()
    result = await _intent_without_outcome(tmp_path, service, job_exists=True, reconcile=True)
    assert result.exit_code == EXIT_OK
    assert service.ledger == ["sc-s01"]
    assert events(run_dir_of(tmp_path / "manifest.yaml"), "submitted")[0].get("reconciled")


async def test_resume_submits_when_the_provider_proves_nothing_was_created(tmp_path: Path) -> None:
    service = FakeService()
    result = await _intent_without_outcome(tmp_path, service, job_exists=False, reconcile=True)
    assert result.exit_code == EXIT_OK
    assert service.ledger == ["sc-s01"]


async def test_resume_without_reconcile_needs_the_user(tmp_path: Path) -> None:
    service = FakeService()
    result = await _intent_without_outcome(tmp_path, service, job_exists=True, reconcile=False)
    assert result.state.shots["sc-s01"].state == ShotState.NEEDS_RECONCILE
    assert service.ledger == ["sc-s01"]


async def test_done_shots_are_untouched_and_changed_shots_redone(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 2)
    service = FakeService()
    await run(path, service)
    rd = run_dir_of(path)
    out1 = rd / "shots" / "sc-s01.mp4"
    stat1 = out1.stat()
    again = await run(path, service)
    assert again.exit_code == EXIT_OK
    assert len(service.ledger) == 2
    assert out1.stat().st_mtime_ns == stat1.st_mtime_ns
    # Edit one prompt: only that shot is redone; its old video is kept aside.
    old2 = (rd / "shots" / "sc-s02.mp4").read_bytes()
    path.write_text(path.read_text().replace('"a gull 2"', '"a heron 2"'))
    changed = await run(path, service)
    assert changed.exit_code == EXIT_OK
    assert sorted(service.ledger) == ["sc-s01", "sc-s02", "sc-s02"]
    assert out1.stat().st_mtime_ns == stat1.st_mtime_ns
    assert (rd / "shots" / "sc-s02.mp4").read_bytes() == video("job-3")
    (kept,) = (rd / "shots" / "superseded").glob("*.mp4")
    assert kept.read_bytes() == old2
    assert kept.with_suffix(".json").is_file()  # the old video's sidecar moved with it


async def test_missing_output_is_fetched_again_without_paying(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1)
    service = FakeService()
    await run(path, service)
    out = run_dir_of(path) / "shots" / "sc-s01.mp4"
    os.unlink(out)
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    assert out.read_bytes() == video("job-1")
    assert service.ledger == ["sc-s01"]


async def test_small_media_go_inline_as_data_urls(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 3, image=True)
    service = FakeService()
    result = await run(path, service)
    assert result.exit_code == EXIT_OK
    png = (tmp_path / "frame.png").read_bytes()
    for media in service.media:
        ((role, url),) = media
        assert role == "image"
        assert url == "data:image/png;base64," + base64.b64encode(png).decode()
    assert not events(run_dir_of(path), "uploaded")  # inline data never goes to the log


async def test_poll_deadline_fails_the_shot_as_charged(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 1, providers="providers:\n  fake:\n    poll_deadline_s: 0.05\n")
    service = FakeService(polls_to_finish=10**9)
    result = await run(path, service)
    rec = result.state.shots["sc-s01"]
    assert rec.state == ShotState.FAILED
    assert rec.charged == "yes"
    assert "timed out" in (rec.error or "")
    assert service.ledger == ["sc-s01"]


@pytest.mark.parametrize("secret", ["sk-canary-123456"])
async def test_api_key_never_reaches_the_checkpoint(tmp_path: Path, secret: str) -> None:
    path = write_manifest(tmp_path, 2)
    service = FakeService()
    await run(path, service, api_keys={"fake": secret})
    raw = (run_dir_of(path) / "checkpoint.jsonl").read_text()
    assert secret not in raw
    assert all(json.loads(line) for line in raw.splitlines())
