"""The distributed mode's pure parts: the limiter derived from a submit rate, task JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.distributed.queues import MIN_WINDOW_S, limiter_for, queue_name
from pipeline.distributed.runtime import OWNER_LOCK, WORKDIR_PREFIX, claim_workdir
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


def test_a_worker_killed_mid_download_leaves_no_files_behind_its_next_start(
    tmp_path: Path,
) -> None:
    # A worker process claims its work directory, writes half a video, and is killed -9.
    script = (
        "import sys, time; from pathlib import Path\n"
        "from pipeline.distributed.runtime import claim_workdir\n"
        "d, fd = claim_workdir(Path(sys.argv[1]))\n"
        "(d / 'x.mp4.part').write_bytes(b'half a video')\n"
        "print(d, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    dead = Path(proc.stdout.readline().strip())
    alive, alive_fd = claim_workdir(tmp_path)  # a worker still running
    young = tmp_path / f"{WORKDIR_PREFIX}young"  # its owner may not hold its lock yet
    young.mkdir()
    (young / OWNER_LOCK).touch()
    other = tmp_path / f"{WORKDIR_PREFIX}notours"  # no owner lock: not a worker's
    other.mkdir()
    proc.kill()
    proc.communicate()
    old = time.time() - 3600
    for d in (dead, alive, other):
        os.utime(d, (old, old))
    assert (dead / "x.mp4.part").is_file()
    mine, fd = claim_workdir(tmp_path)
    try:
        assert not dead.exists()  # the dead worker's partial file is gone
        assert [d.is_dir() for d in (alive, young, other, mine)] == [True] * 4
    finally:
        os.close(fd)
        os.close(alive_fd)
