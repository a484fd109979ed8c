"""The outputs' cache (pipeline.outputs.cache): a rebuild costs what changed, and nothing in the
cache is trusted blindly.

One run of the local provider is shared by the module (a 16:9 shot with a first frame, whose
clip is already in the animatic's format; a 9:16 shot with two takes; a 21:9 shot); every test
works on its own copy of the run directory. What a rebuild did is read from the cache's counters
(``OutputCache.stats``) and from the files' mtimes, never from timings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from pipeline.outputs.animatic import expected_frames, plan_animatic, write_animatic
from pipeline.outputs.cache import CACHE, CacheStats, OutputCache
from pipeline.outputs.contact_sheet import sheet_layout, write_contact_sheet
from pipeline.outputs.drawing import letterbox
from pipeline.outputs.posters import ensure_posters
from pipeline.outputs.write import write_outputs
from pipeline.render.clips import probe
from tests.local_runs import Run, finished_run

MANIFEST = """\
version: 1
name: cache
defaults: {provider: local, duration: 2, aspect_ratio: "16:9"}
providers: {local: {latency_s: 0}}
scenes:
  - id: one
    shots:
      - {id: a, prompt: "Wide: the pier at dawn", image: pier.png}
      - {id: b, prompt: "The lighthouse, tall", aspect_ratio: "9:16", takes: 2, seed: 5}
  - id: two
    shots:
      - {id: c, prompt: "Anamorphic street", aspect_ratio: "21:9"}
"""
FPS = 12
SIZE = (640, 360)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return finished_run(tmp_path_factory.mktemp("cache"), MANIFEST, "cache")


@pytest.fixture
def run(original: Run, tmp_path: Path) -> Run:
    """A copy of the run directory of its own (the checkpoint's paths are relative)."""
    copy = tmp_path / "cache"
    shutil.copytree(original.run_dir, copy, copy_function=shutil.copy2)
    return Run(copy, original.manifest, original.state)


def build(run: Run, picks: Mapping[str, int] | None = None) -> CacheStats:
    """Posters, contact sheet and animatic through one cache, as ``write_outputs`` does."""
    cache = OutputCache(run.run_dir)
    ensure_posters(run.run_dir, run.state, cache=cache)
    write_contact_sheet(run.run_dir, run.manifest, run.state, picks=picks, cache=cache)
    write_animatic(run.run_dir, run.manifest, run.state, picks=picks, cache=cache)
    cache.save()
    return cache.stats


def mtimes(run_dir: Path) -> dict[str, int]:
    """mtime of every output and cache entry (what a rebuild that writes nothing leaves alone)."""
    names = ["animatic.mp4", "contact-sheet.png"]
    names += [p.relative_to(run_dir).as_posix() for p in (run_dir / "posters").glob("*.jpg")]
    names += [p.relative_to(run_dir).as_posix() for p in (run_dir / CACHE).rglob("*-*.*")]
    return {name: (run_dir / name).stat().st_mtime_ns for name in names}


def entries(run: Run, kind: str) -> list[Path]:
    return sorted(p for p in (run.run_dir / CACHE / kind).iterdir() if not p.name.startswith("."))


def decoded(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]  # type: ignore[no-untyped-call]


def diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_a_second_build_encodes_nothing_and_writes_nothing(run: Run) -> None:
    first = build(run)
    # 4 takes: a poster each, a tile each; segments: 2 scene slates, the 9:16 take 1 and the
    # 21:9 shot encoded; the 16:9 clip is already in the animatic's format: copied as it is.
    assert first.made == {"poster": 4, "tile": 4, "segment": 4}
    assert first.copied == {"segment": 1}
    assert first.written == {"poster": 4, "sheet": 1, "animatic": 1}
    before = mtimes(run.run_dir)

    second = build(run)
    assert second.made == {}
    assert second.written == {}
    assert second.kept == {"poster": 4, "sheet": 1, "animatic": 1}
    assert mtimes(run.run_dir) == before


def test_write_outputs_says_what_it_made_and_kept(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline"):
        write_outputs(run.run_dir, run.manifest)
        write_outputs(run.run_dir, run.manifest)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outputs: ")]
    assert len(lines) == 2
    assert "made poster 4, segment 4, tile 4" in lines[0]
    assert lines[1] == "outputs: kept animatic 1, poster 4, sheet 1"


def test_a_pick_recuts_only_the_animatic_in_order(run: Run) -> None:
    build(run)
    posters = {p.name: p.stat().st_mtime_ns for p in (run.run_dir / "posters").iterdir()}
    picks = {"one-b": 2}
    picked = build(run, picks)
    assert picked.made == {"segment": 1}  # the take the pick brings in, nothing else
    assert picked.reused["segment"] == 3
    assert picked.written == {"sheet": 1, "animatic": 1}  # the sheet frames the picked take
    assert picked.kept == {"poster": 4}
    assert {p.name: p.stat().st_mtime_ns for p in (run.run_dir / "posters").iterdir()} == posters

    path = run.run_dir / "animatic.mp4"
    frames = decoded(path)  # every packet decodes
    total = expected_frames(run.manifest, run.state, picks, FPS, 1.0)
    assert len(frames) == total == (2 + 2 + 2 + 2) * FPS  # 3 shots of 2 s, 2 slates of 1 s
    info = probe(path)
    assert (info.codec, info.width, info.height, info.fps) == ("h264", *SIZE, FPS)
    assert abs(info.duration_s - total / FPS) <= 1 / FPS
    start = 0
    for seg in plan_animatic(run.manifest, run.state, picks, FPS, 1.0, run.run_dir):
        middle = frames[start + seg.frames // 2]
        if seg.kind == "clip":  # the take's own frame, letterboxed: in this place, this take
            own = decoded(run.run_dir / f"shots/{seg.title}.mp4")[seg.frames // 2]
            assert diff(middle, letterbox(own, SIZE)) < 6, seg.title
        else:
            assert seg.kind == "slate"
            assert ImageStat.Stat(middle.convert("L")).mean[0] < 40  # a dark card
        start += seg.frames
    t1 = letterbox(decoded(run.run_dir / "shots/one-b-t1.mp4")[FPS], SIZE)
    t2 = letterbox(decoded(run.run_dir / "shots/one-b-t2.mp4")[FPS], SIZE)
    cut = frames[FPS + 2 * FPS + FPS]  # slate, one-a, then one-b's 13th frame
    inside = (230, 0, 410, 360)  # the pillarboxed picture: the takes' palettes differ
    assert diff(cut.crop(inside), t2.crop(inside)) < 6 < diff(cut.crop(inside), t1.crop(inside))

    back = build(run, {"one-b": 1})  # picking the first take again: all from the cache
    assert back.made == {}
    assert back.written == {"sheet": 1, "animatic": 1}


def test_damaged_and_foreign_entries_are_rebuilt(run: Run) -> None:
    build(run)
    for entry in entries(run, "segment"):  # damaged: bytes flipped in the middle
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    tiles = entries(run, "tile")  # foreign: another entry's bytes under this one's name
    tiles[0].write_bytes(tiles[1].read_bytes())
    for entry in entries(run, "poster"):  # truncated
        entry.write_bytes(entry.read_bytes()[:100])
    for name in ("animatic.mp4", "contact-sheet.png"):
        (run.run_dir / name).unlink()
    shutil.rmtree(run.run_dir / "posters")

    again = build(run)
    assert again.rejected == {"segment": 4, "tile": 1, "poster": 4}
    assert again.made == {"segment": 4, "tile": 1, "poster": 4}
    frames = decoded(run.run_dir / "animatic.mp4")
    assert len(frames) == expected_frames(run.manifest, run.state, None, FPS, 1.0)
    layout = sheet_layout(run.manifest)
    with Image.open(run.run_dir / "contact-sheet.png") as img:
        sheet = img.convert("RGB")
    for shot in run.manifest.shots:  # every cell has its picture (not a dark "unreadable" card)
        assert ImageStat.Stat(sheet.crop(layout.cells[shot.id])).stddev[0] > 3, shot.id

    rebuilt = build(run)
    assert rebuilt.rejected == {}
    assert rebuilt.made == {}


def test_a_damaged_index_is_ignored(run: Run) -> None:
    build(run)
    (run.run_dir / CACHE / "index.json").write_text('{"version": 1, "outputs": [1, 2')
    again = build(run)
    assert again.made == {}  # every entry still verifies: outputs made again from them
    assert again.written == {"poster": 4, "sheet": 1, "animatic": 1}
    assert len(decoded(run.run_dir / "animatic.mp4")) == expected_frames(
        run.manifest, run.state, None, FPS, 1.0
    )


def test_a_replaced_video_is_hashed_again_not_taken_for_the_recorded_one(run: Run) -> None:
    build(run)
    video = run.run_dir / "shots" / "one-a.mp4"
    shutil.copyfile(run.run_dir / "shots" / "two-c.mp4", video)  # the log still says one-a's
    later = video.stat().st_mtime_ns + 2_000_000_000
    os.utime(video, ns=(later, later))
    again = build(run)
    # Hashed again: it is two-c's video now, whose poster, tile and segment the cache has.
    assert again.made == {}
    assert again.written == {"poster": 1, "sheet": 1, "animatic": 1}
    frames = decoded(run.run_dir / "animatic.mp4")
    wide = letterbox(decoded(run.run_dir / "shots/two-c.mp4")[FPS], SIZE)
    assert diff(frames[FPS + FPS], wide) < 6  # one-a's place shows what the file holds
    with (
        Image.open(run.run_dir / "posters" / "one-a.jpg") as poster,
        Image.open(run.run_dir / "posters" / "two-c.jpg") as other,
    ):
        assert poster.size == other.size  # the poster of what the file now holds
        assert diff(poster.convert("RGB"), other.convert("RGB")) < 3

    touched = build(run)
    assert touched.made == {}
    os.utime(video, ns=(later + 10**9, later + 10**9))  # touched only: same content
    assert build(run).made == {}


def test_a_video_changed_in_place_gets_a_new_identity(run: Run) -> None:
    rec = run.state.shots["one-a"]
    first = OutputCache(run.run_dir)
    recorded = first.video_id(rec)
    assert recorded == f"sha256:{rec.sha256}"  # first sight: the log's verified sha256
    first.save()
    video = run.run_dir / "shots" / "one-a.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size, other bytes
    video.write_bytes(bytes(data))
    later = video.stat().st_mtime_ns + 2_000_000_000
    os.utime(video, ns=(later, later))
    changed = OutputCache(run.run_dir).video_id(rec)
    assert changed is not None
    assert changed != recorded
    assert OutputCache(run.run_dir).video_id(dataclasses.replace(rec, output="nope.mp4")) is None


def test_the_timeline_does_not_open_videos_it_has_probed(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.outputs import timeline

    opened: list[Path] = []

    def spy(path: Path) -> object:
        opened.append(path)
        return probe(path)

    monkeypatch.setattr(timeline, "probe", spy)
    write_outputs(run.run_dir, run.manifest)
    assert len(opened) == 4  # every take once
    first = (run.run_dir / "timeline.otio").read_text()
    opened.clear()
    write_outputs(run.run_dir, run.manifest)  # a no-op: the rates and lengths are the cache's
    assert opened == []
    assert (run.run_dir / "timeline.otio").read_text() == first
    for entry in entries(run, "probe"):  # a damaged entry is probed again, never trusted
        entry.write_text('["not a rate", 1]')
    write_outputs(run.run_dir, run.manifest)
    assert len(opened) == 4
    assert (run.run_dir / "timeline.otio").read_text() == first
    opened.clear()
    (run.run_dir / "shots" / "one-a.mp4").write_bytes(b"\0" * 64)  # another file: probed again
    write_outputs(run.run_dir, run.manifest)
    assert [p.name for p in opened] == ["one-a.mp4"]
    assert "one-a (missing: unreadable)" in (run.run_dir / "timeline.otio").read_text()
