"""The distributed mode's pure parts: the limiter derived from a submit rate, task JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.distributed.queues import MIN_WINDOW_S, limiter_for, queue_name
from pipeline.distributed.tasks import ShotTask, shot_workflow_id
from pipeline.models import Asset, MediaRef, MediaRole, Shot
from pipeline.settings import DownloadSettings, Price, ProviderSettings, StorageSettings


@pytest.mark.parametrize("rpm", [2, 3, 7, 12, 24, 30, 60, 61.5, 120, 600, 10_000])
def test_the_limiter_keeps_every_minute_under_the_rate_even_with_a_window_of_lag(
    rpm: float,
) -> None:
    limiter = limiter_for(rpm)
    assert limiter is not None
    limit, period = limiter["limit"], limiter["period"]
    assert limit >= 1
    assert period >= MIN_WINDOW_S
    # any 60 s, widened by one window of lag, spans at most ceil(60 / period) + 1 windows
    assert limit * (math.ceil(60 / period - 1e-9) + 1) <= rpm
    assert limit * 60 / period >= 0.5 * rpm  # and it does not throw most of the rate away


def test_slow_rates_and_no_rate() -> None:
    assert limiter_for(None) is None
    assert limiter_for(1) == {"limit": 1, "period": 120.0}
    assert queue_name("venice", "studio") == "venice.studio"


def test_a_task_survives_its_json(tmp_path: Path) -> None:
    image = Asset(MediaRole.IMAGE, path=tmp_path / "a.png", sha256="ab" * 32, size=10,
                  mime="image/png", width=64, height=36)  # fmt: skip
    ref = Asset(MediaRole.REFERENCE_VIDEO, url="https://example.com/v.mp4", duration_s=3.5)
    shot = Shot(
        id="sc-s01-t2", scene="sc", name="s01", prompt="a pier", provider="relaydance",
        model="m", duration=5, aspect_ratio="16:9", fingerprint="sha256:" + "cd" * 32, take=2,
        seed=7, image=image, references=(ref,), extra={"camera": {"move": "dolly"}},
    )  # fmt: skip
    task = ShotTask(
        run_id="r",
        shot=shot,
        media=(MediaRef(MediaRole.IMAGE, "https://s3/x?sig", "ab" * 32, "image/png", 1e9),),
        settings=ProviderSettings(
            max_in_flight=3, account="studio", prices={"m": Price(per_job_usd=0.5)}
        ),
        downloads=DownloadSettings(allow_hosts=("127.0.0.1:9",)),
        storage=StorageSettings(url="s3://b/p"),
    )
    doc = json.loads(json.dumps(task.to_json()))  # what DBOS stores
    again = ShotTask.of(doc)
    assert again == task
    assert again.workflow_id == shot_workflow_id("r", "sc-s01-t2", shot.fingerprint)
    assert again.workflow_id == "r/sc-s01-t2/" + "cd" * 8
