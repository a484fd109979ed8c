"""Only playable videos are ``done``: a hostile provider serving truncated, garbage and
wrong-length MP4s. An unplayable result is fetched again (free) up to the retry limit, then the
shot fails ``download_rejected``; it is never resubmitted (pipeline.transfer.playable)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from pipeline.engine import retry
from pipeline.engine.options import RunOptions, RunResult
from pipeline.engine.runner import execute
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.transfer import playable
from pipeline.transfer.playable import Expected, Tolerance, UnplayableVideo
from tests.fakes import FakeService, clip, fake_spec, video

#: Fetches of one shot before it fails: the fetch retry loop's attempts (no resubmit).
FETCHES = retry.DEFAULT_POLICY.attempts

#: The first 1,200 bytes of a real 2 s clip: its header, not one whole frame.
TRUNCATED = clip(2)[:1200]
#: An ``ftyp`` box followed by garbage: passes the container signature, nothing more.
GARBAGE = clip(2)[:32] + bytes(range(256)) * 16


async def _run(tmp_path: Path, service: FakeService, duration: int = 2) -> RunResult:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\nname: play\ndefaults: {{provider: fake, model: m1, duration: {duration}}}\n"
        "scenes:\n  - id: a\n    shots:\n      - {id: s1, prompt: one}\n"
    )
    registry = {"fake": fake_spec(service)}
    m = load_manifest(path, registry=registry)
    return await execute(m, tmp_path / "jobs" / "play", RunOptions(registry=registry))


def _left(tmp_path: Path) -> list[str]:
    shots = tmp_path / "jobs" / "play" / "shots"
    return sorted(p.name for p in shots.iterdir()) if shots.exists() else []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (TRUNCATED, "not a playable video: truncated at 1,200 bytes (no frames)"),
        (GARBAGE, "not a playable video: 4,128 bytes that do not open as a video"),
        (clip(5), "duration 5.0 s, asked 2 s (tolerance 1.0 s)"),
    ],
    ids=["truncated", "ftyp-garbage", "wrong-duration"],
)
async def test_always_unplayable_fails_download_rejected_and_is_never_resubmitted(
    tmp_path: Path, body: bytes, reason: str
) -> None:
    service = FakeService(body_override=body)
    result = await _run(tmp_path, service)
    rec = result.state.shots["a-s1"]
    assert rec.state == ShotState.FAILED
    assert (rec.error or "").startswith(f"download_rejected: {reason}")
    assert rec.charged == "yes"
    assert service.ledger == ["a-s1"]  # one submit: paid once
    assert service.fetches == FETCHES  # fetched again (free) up to the retry limit
    assert _left(tmp_path) == []  # nothing under a final name, no part file
    assert rec.sha256 is None
    # a second run leaves the failed shot alone: no new submit, no new fetch
    again = await _run(tmp_path, service)
    assert again.state.shots["a-s1"].state == ShotState.FAILED
    assert service.ledger == ["a-s1"]
    assert service.fetches == FETCHES


async def test_a_bad_fetch_then_a_good_one_ends_done_with_one_submit(tmp_path: Path) -> None:
    service = FakeService(next_bodies=[TRUNCATED])  # the first fetch is cut, the second whole
    result = await _run(tmp_path, service)
    rec = result.state.shots["a-s1"]
    assert rec.state == ShotState.DONE
    assert service.ledger == ["a-s1"]
    assert service.submits == 1
    assert service.fetches == 2
    out = tmp_path / "jobs" / "play" / "shots" / "a-s1.mp4"
    assert out.read_bytes() == video("job-1")
    assert rec.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert _left(tmp_path) == ["a-s1.json", "a-s1.mp4"]  # the video and its sidecar


async def test_the_fakes_videos_pass_honestly_for_the_duration_each_shot_asks(
    tmp_path: Path,
) -> None:
    service = FakeService()
    result = await _run(tmp_path, service, duration=4)
    assert result.state.shots["a-s1"].state == ShotState.DONE
    assert service.fetches == 1
    facts = playable.check(tmp_path / "jobs" / "play" / "shots" / "a-s1.mp4", Expected(4, "fake"))
    assert facts.codec == "h264"
    assert facts.duration_s == pytest.approx(4.0)


async def test_the_check_runs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = playable.check

    def spying(source: Path | bytes, expected: Expected | None = None) -> playable.VideoFacts:
        threads.append(threading.current_thread())
        return real(source, expected)

    monkeypatch.setattr(playable, "check", spying)
    result = await _run(tmp_path, FakeService())
    assert result.state.shots["a-s1"].state == ShotState.DONE
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()  # never on the event loop


def test_tolerance_is_per_provider_with_a_default_of_one_second_or_a_fifth() -> None:
    default = playable.tolerance("venice")
    assert default == playable.DEFAULT_TOLERANCE == Tolerance(1.0, 0.2)
    assert default.allowed(2) == 1.0
    assert default.allowed(10) == pytest.approx(2.0)
    assert playable.tolerance("local").allowed(10) == 0.5  # renders exact frame counts
    playable.check(clip(4), Expected(5, "venice"))  # providers round: 4 s for 5 s is fine
    with pytest.raises(UnplayableVideo, match=r"duration 4\.0 s, asked 5 s"):
        playable.check(clip(4), Expected(5, "local"))
    with pytest.raises(UnplayableVideo, match=r"duration 3\.0 s, asked 5 s \(tolerance 1\.0 s\)"):
        playable.check(clip(3), Expected(5, "venice"))


def test_a_cut_tail_or_garbled_last_frames_are_refused() -> None:
    whole = clip(2)
    with pytest.raises(UnplayableVideo, match=r"truncated at [\d,]+ bytes \(11 of 12 frames"):
        playable.check(whole[:-10])
    garbled = whole[:-300] + b"\xff" * 300
    with pytest.raises(UnplayableVideo, match="not a playable video"):
        playable.check(garbled)
    assert playable.check(whole).frames == 12
