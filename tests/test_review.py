"""Review records (take_picked, take_rejected, note_added, reroll_requested): folded from the
checkpoint, written under the run lock or queued for the runner that holds it, re-rolls run by
the runner, and shown by `status --json`, report.json, the storyboard page and the contact
sheet. The review app's HTTP rules are in test_review_http.py, the browser in
test_review_browser.py."""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

import pipeline
from pipeline.journal import inbox
from pipeline.journal.checkpoint import FILE, Record, load
from pipeline.journal.snapshot import load_state, write_snapshot
from pipeline.journal.state import RunState, apply, folder, replay
from pipeline.manifest.expand import take_of
from pipeline.manifest.loader import Manifest, load_manifest
from pipeline.manifest.takes import resolver, with_rerolls
from pipeline.models import Event, ShotState
from pipeline.outputs.contact_sheet import ACCENT, BACKGROUND, sheet_layout
from pipeline.outputs.storyboard import PAGE
from pipeline.outputs.write import write_outputs

MANIFEST = """\
version: 1
name: review
defaults: {provider: local, model: previz, duration: 1, aspect_ratio: "16:9"}
providers: {local: {latency_s: LATENCY}}
scenes:
  - id: dawn
    shots:
      - {id: s01, prompt: "Two takes of the harbor", takes: 2, duration: 2, seed: 18}
      - {id: s02, prompt: "The <b>pier</b> & its net", image: pier.png, end_image: pier.png}
  - id: dusk
    shots:
      - {id: s01, prompt: Boats return at dusk}
"""


@dataclass
class Run:
    root: Path
    run_dir: Path
    manifest: Manifest


def write(root: Path, latency: float = 0.0, text: str = MANIFEST) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (320, 180), (40, 90, 160)).save(root / "pier.png")
    path = root / "m.yaml"
    path.write_text(text.replace("LATENCY", str(latency)))
    return path


def finished_run(root: Path) -> Run:
    """A finished run of the offline ``local`` provider, outputs written."""
    manifest = load_manifest(write(root))
    run_dir = root / "jobs" / "review"
    result = anyio.run(partial(pipeline.run, manifest, run_dir))
    assert result.exit_code == 0
    return Run(root, run_dir, manifest)


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(run_dir: Path, *names: str) -> list[Record]:
    return [r for r in load(run_dir / FILE, repair=False).records if r.ev in names]


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def request(ev: Event, shot: str, **data: Any) -> inbox.Request:
    return inbox.Request(ev, shot, data)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return finished_run(tmp_path)


# ----- the fold --------------------------------------------------------------------------------


def review_records(rng: random.Random, n: int) -> list[Record]:
    """Review records of every kind (some without their fields) among planned shots."""
    out = [Record(1, "2026-11-20T10:00:00.000Z", Event.SHOT_PLANNED, "k-t1", {"fp": "a"})]
    for seq in range(2, n + 2):
        ev = rng.choice(
            [
                Event.TAKE_PICKED,
                Event.TAKE_REJECTED,
                Event.NOTE_ADDED,
                Event.REROLL_REQUESTED,
                Event.STATUS,
            ]
        )
        take = rng.randint(0, 3)
        data: dict[str, Any] = {"key": "k", "take": take, "req": f"r{seq % 7}"}
        if ev == Event.TAKE_REJECTED:
            data["rejected"] = rng.random() < 0.7
        if ev == Event.NOTE_ADDED:
            data["text"] = rng.choice(["keep", "too dark", "ü <b>"])
        if ev == Event.REROLL_REQUESTED:
            data |= {"from": "k-t1", "prov": "local", "model": "previz"}
        if rng.random() < 0.1:
            data.pop(rng.choice(list(data)))
        shot = f"k-t{max(take, 1)}"
        out.append(Record(seq, f"2026-11-20T10:00:{seq % 60:02d}.000Z", ev, shot, data))
    return out


def test_review_records_fold_alike_and_survive_a_snapshot(tmp_path: Path) -> None:
    rng = random.Random(3)
    for n in range(40):
        records = review_records(rng, rng.randint(1, 25))
        replayed = replay(records)
        applied, folded = RunState(), RunState()
        fold = folder(folded)
        for r in records:
            apply(applied, r)
            fold(r.seq, r.ts, r.ev, r.shot, r.data)
        assert replayed == applied == folded
        run_dir = tmp_path / f"r{n}"
        run_dir.mkdir()
        (run_dir / FILE).write_bytes(b"")
        write_snapshot(run_dir, replayed, offset=0, last_seq=records[-1].seq)
        snap = load_state(run_dir / FILE)
        assert snap == replayed  # picks, review, rerolls and requests round-trip as JSON


def test_review_semantics() -> None:
    ts = "2026-11-20T10:00:00.000Z"

    def rec(seq: int, ev: Event, shot: str, **data: Any) -> Record:
        return Record(seq, ts, ev, shot, data)

    state = replay(
        [
            rec(1, Event.SHOT_PLANNED, "a-t1", fp="x", prov="local", model="previz"),
            rec(2, Event.TAKE_REJECTED, "a-t2", key="a", take=2),
            rec(3, Event.TAKE_PICKED, "a-t2", key="a", take=2),  # a pick clears the rejection
            rec(4, Event.NOTE_ADDED, "a-t1", key="a", take=1, text="too dark"),
            rec(5, Event.TAKE_REJECTED, "b-t1", key="b", take=1),
            rec(6, Event.REROLL_REQUESTED, "a-t3", key="a", take=3, prov="local", model="m"),
        ]
    )
    assert state.picks == {"a": 2}
    assert state.review["a-t2"]["rejected"] is False
    assert state.review["a-t1"]["notes"] == [{"ts": ts, "text": "too dark"}]
    assert set(state.shots) == {"a-t1", "a-t3"}  # review records add no shot but a re-roll
    assert state.shots["a-t3"].state == ShotState.PENDING
    assert (state.shots["a-t3"].provider, state.shots["a-t3"].model) == ("local", "m")
    rejected = replay(
        [
            rec(1, Event.TAKE_PICKED, "a-t2", key="a", take=2),
            rec(2, Event.TAKE_REJECTED, "a-t2", key="a", take=2),
        ]
    )
    assert rejected.picks == {"a": 0}  # rejecting the chosen take clears the pick


@pytest.mark.parametrize("seed", ["seed: 40", ""])
@pytest.mark.parametrize("takes", [1, 2])
def test_a_reroll_is_the_take_the_manifest_would_have_made(
    tmp_path: Path, seed: str, takes: int
) -> None:
    text = "version: 1\nname: seeds\ndefaults: {provider: local, duration: 1}\nscenes:\n"
    text += "  - id: a\n    shots:\n      - {id: s1, prompt: one, takes: TAKES, SEED}\n"
    few = tmp_path / "few.yaml"
    few.write_text(text.replace("TAKES", str(takes)).replace(", SEED", f", {seed}" if seed else ""))
    more = tmp_path / "more.yaml"
    more.write_text(
        text.replace("TAKES", str(takes + 1)).replace(", SEED", f", {seed}" if seed else "")
    )
    mine = load_manifest(few)
    theirs = load_manifest(more).shots[-1]
    new = take_of(mine.shots[0], takes + 1, mine.name)
    assert (new.id, new.take, new.seed, new.fingerprint) == (
        theirs.id,
        theirs.take,
        theirs.seed,
        theirs.fingerprint,
    )
    assert new.fingerprint != mine.shots[0].fingerprint


# ----- pick, status --json, report.json, page and sheet ---------------------------------------


def test_pick_is_a_checkpoint_record_and_old_picks_json_still_count(run: Run) -> None:
    rd = run.run_dir
    status = json.loads(cli("status", str(rd), "--json", cwd=run.root).stdout)
    assert status["picks"] == {}
    assert not any(s["picked"] for s in status["shots"])
    # An old run: its pick only in picks.json.
    (rd / "picks.json").write_text(json.dumps({"dawn-s01": 1}))
    status = json.loads(cli("status", str(rd), "--json", cwd=run.root).stdout)
    assert status["picks"] == {"dawn-s01": 1}
    assert [s["id"] for s in status["shots"] if s["picked"]] == ["dawn-s01-t1"]
    assert cli("storyboard", str(rd), cwd=run.root).returncode == 0
    assert json.loads((rd / "report.json").read_text())["picks"] == {"dawn-s01": 1}
    # `pipeline pick` records take_picked; the checkpoint wins over picks.json.
    res = cli("pick", str(rd), "dawn-s01", "2", cwd=run.root)
    assert res.returncode == 0, res.stderr
    [picked] = events(rd, Event.TAKE_PICKED)
    assert (picked.shot, picked.data["key"], picked.data["take"]) == ("dawn-s01-t2", "dawn-s01", 2)
    assert json.loads((rd / "picks.json").read_text()) == {"dawn-s01": 2}
    (rd / "picks.json").write_text(json.dumps({"dawn-s01": 1}))  # stale: the log says 2
    status = json.loads(cli("status", str(rd), "--json", cwd=run.root).stdout)
    assert status["picks"] == {"dawn-s01": 2}
    report = json.loads((rd / "report.json").read_text())
    assert report["picks"] == {"dawn-s01": 2}
    assert report["shots"]["dawn-s01-t2"]["picked"] is True
    assert report["shots"]["dawn-s01-t1"]["picked"] is False
    bad = cli("pick", str(rd), "dawn-s02", "2", cwd=run.root)
    assert bad.returncode == 2
    assert "dawn-s02 has no take 2" in bad.stderr


def test_page_and_contact_sheet_agree_on_picks(run: Run) -> None:
    rd = run.run_dir
    layout = sheet_layout(run.manifest)

    def marked() -> tuple[set[str], set[str]]:
        page = (rd / PAGE).read_text()
        on_page = {
            sid
            for sid in ("dawn-s01-t1", "dawn-s01-t2")
            if f'class="card picked" id="{sid}"' in page
        }
        with Image.open(rd / "contact-sheet.png") as img:
            sheet = img.convert("RGB")
        framed = set()
        for sid in ("dawn-s01-t1", "dawn-s01-t2"):
            left, top, _, _ = layout.cells[sid]
            colour = sheet.getpixel((left - 2, top + 20))
            assert colour in (ACCENT, BACKGROUND)
            if colour == ACCENT:
                framed.add(sid)
        return on_page, framed

    assert marked() == (set(), set())  # no pick: neither marks one
    anyio.run(
        inbox.record,
        rd,
        [request(Event.TAKE_PICKED, "dawn-s01-t2", key="dawn-s01", take=2)],
        resolver(run.manifest),
    )
    write_outputs(rd, run.manifest)
    assert marked() == ({"dawn-s01-t2"}, {"dawn-s01-t2"})


def test_static_page_links_outputs_thumbnails_seed_and_notes(run: Run) -> None:
    rd = run.run_dir
    note = request(Event.NOTE_ADDED, "dawn-s02", key="dawn-s02", take=1, text="<i>warmer</i>")
    anyio.run(inbox.record, rd, [note], resolver(run.manifest))
    (rd / "timeline.otio").unlink(missing_ok=True)
    write_outputs(rd, run.manifest)
    page = (rd / PAGE).read_text()
    for name in ("animatic.mp4", "contact-sheet.png", "report.json"):
        assert f'href="{name}"' in page
    assert ('href="timeline.otio"' in page) == (rd / "timeline.otio").is_file()
    thumbs = sorted((rd / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 1  # first and end frame are one file: one thumbnail
    assert page.count(f'src="thumbs/{thumbs[0].name}"') == 2
    assert "first frame" in page
    assert "end frame" in page
    assert "pier.png" in page
    shot = next(s for s in run.manifest.shots if s.id == "dawn-s02")
    assert f"<dt>seed</dt><dd>{shot.seed}</dd>" in page
    assert "&lt;i&gt;warmer&lt;/i&gt;" in page
    assert "<i>" not in page
    assert "<script" not in page


# ----- the run lock: direct appends or the inbox ------------------------------------------------


def _locked(run_dir: Path) -> bool:
    try:
        fd = os.open(run_dir / "checkpoint.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_running_runner_records_queued_requests_and_runs_the_reroll(tmp_path: Path) -> None:
    path = write(tmp_path, latency=2.0)
    manifest = load_manifest(path)
    rd = tmp_path / "jobs" / "review"
    runner = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(path), "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (rd / FILE).is_file() and _locked(rd))
        queued = [
            request(Event.REROLL_REQUESTED, "dusk-s01", key="dusk-s01", take=1),
            request(Event.NOTE_ADDED, "dawn-s02", key="dawn-s02", take=1, text="queued"),
        ]
        recorded, _ = anyio.run(inbox.record, rd, queued, resolver(manifest))
        # The runner holds the run: the requests are queued for it, not appended here (the
        # runner may already have taken some of them from the inbox, so no count is asserted).
        assert recorded is False
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 0, err
    assert "dusk-s01-t2" in out  # run by that same runner
    assert inbox.pending(rd) == []
    state = load_state(rd / FILE)
    assert state.shots["dusk-s01-t2"].state == ShotState.DONE
    assert state.rerolls["dusk-s01-t2"]["from"] == "dusk-s01"
    assert state.review["dawn-s02"]["notes"][0]["text"] == "queued"
    # The re-roll's first record comes after the request, once.
    [ask] = events(rd, Event.REROLL_REQUESTED)
    planned = [r for r in events(rd, Event.SHOT_PLANNED) if r.shot == "dusk-s01-t2"]
    assert len(planned) == 1
    assert planned[0].seq > ask.seq
    assert (rd / "shots" / "dusk-s01-t2.mp4").is_file()


def test_left_over_requests_are_recorded_once(run: Run) -> None:
    rd = run.run_dir
    pick = request(Event.TAKE_PICKED, "dawn-s01-t1", key="dawn-s01", take=1)
    inbox.queue(rd, pick)
    inbox.queue(rd, pick)  # the same request twice (a crash before its file was removed)
    (rd / inbox.INBOX / "0-junk.json").write_text('{"ev": "fetched", "shot": "x"}')
    later = request(Event.TAKE_PICKED, "dawn-s01-t2", key="dawn-s01", take=2)
    recorded, state = anyio.run(inbox.record, rd, [later], resolver(run.manifest))
    assert recorded is True
    assert [r.shot for r in events(rd, Event.TAKE_PICKED)] == ["dawn-s01-t1", "dawn-s01-t2"]
    assert state.picks == {"dawn-s01": 2}
    assert inbox.pending(rd) == []
    assert (rd / inbox.INBOX / "bad" / "0-junk.json").is_file()  # never appended


def test_a_reroll_waits_for_the_next_run_when_recorded_between_runs(run: Run) -> None:
    rd = run.run_dir
    ask = request(Event.REROLL_REQUESTED, "dawn-s01-t2", key="dawn-s01", take=2)
    recorded, state = anyio.run(inbox.record, rd, [ask], resolver(run.manifest))
    assert recorded
    assert list(state.rerolls) == ["dawn-s01-t3"]
    status = json.loads(cli("status", str(rd), "--json", cwd=run.root).stdout)
    assert {s["id"]: s["state"] for s in status["shots"]}["dawn-s01-t3"] == "pending"
    manifest = with_rerolls(run.manifest, state)
    assert [s.id for s in manifest.shots][:3] == ["dawn-s01-t1", "dawn-s01-t2", "dawn-s01-t3"]
    res = cli("resume", str(rd), "--no-progress", cwd=run.root)
    assert res.returncode == 0, res.stderr
    state = load_state(rd / FILE)
    assert state.shots["dawn-s01-t3"].state == ShotState.DONE
    report = json.loads((rd / "report.json").read_text())
    assert report["shots"]["dawn-s01-t3"]["reroll_of"] == "dawn-s01"
    assert "dawn-s01-t3" in (rd / PAGE).read_text()


def test_a_rejected_take_is_not_cut_in_while_another_is_left(run: Run) -> None:
    """No pick: the animatic and the timeline cut in the first take done and not rejected."""
    import opentimelineio as otio

    from tests.test_animatic import diff, frame_at

    rd = run.run_dir

    def cut() -> tuple[list[str], Image.Image]:
        res = cli("storyboard", str(rd), cwd=run.root)
        assert res.returncode == 0, res.stderr
        timeline = otio.adapters.read_from_file(str(rd / "timeline.otio"))
        track = next(t for t in timeline.video_tracks() if t.name == "chosen takes")
        return [c.name for c in track.find_clips()], frame_at(rd / "animatic.mp4", start + 18)

    start = round(1.0 * 12)  # the first scene's slate, then dawn-s01 (18: past its title card)
    own = {t: frame_at(rd / f"shots/dawn-s01-t{t}.mp4", 18) for t in (1, 2)}
    assert diff(own[1], own[2]) > 10
    clips, frame = cut()
    assert clips[0] == "dawn-s01-t1"  # nothing rejected: the first take
    assert diff(frame, own[1]) < 4 < diff(frame, own[2])

    reject = request(Event.TAKE_REJECTED, "dawn-s01-t1", key="dawn-s01", take=1, rejected=True)
    anyio.run(inbox.record, rd, [reject], resolver(run.manifest))
    clips, frame = cut()
    assert clips[0] == "dawn-s01-t2"
    assert diff(frame, own[2]) < 4 < diff(frame, own[1])

    both = request(Event.TAKE_REJECTED, "dawn-s01-t2", key="dawn-s01", take=2, rejected=True)
    anyio.run(inbox.record, rd, [both], resolver(run.manifest))
    clips, _ = cut()
    assert clips[0] == "dawn-s01-t1"  # every take rejected: the first one still fills the slot
