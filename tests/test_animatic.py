"""Storyboard outputs on a real run: the animatic (pipeline.outputs.animatic) and the contact sheet.

One run of the local provider (real H.264 clips at 16:9, 9:16 and 21:9, a shot with two takes)
is shared by the module; a shot added to the manifest afterwards was never run (pending).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from pipeline.journal.state import RunState, ShotRecord
from pipeline.manifest.loader import load_manifest
from pipeline.models import ShotState
from pipeline.outputs.animatic import expected_frames, plan_animatic, write_animatic
from pipeline.outputs.contact_sheet import (
    ACCENT,
    BACKGROUND,
    MISSING_FILL,
    sheet_layout,
    write_contact_sheet,
)
from pipeline.render.clips import ClipSpec, probe, render_clip
from tests.local_runs import Run, finished_run

MANIFEST = """\
version: 1
name: cut
defaults: {provider: local, duration: 2, aspect_ratio: "16:9"}
providers: {local: {latency_s: 0}}
scenes:
  - id: one
    shots:
      - {id: a, prompt: "Wide: the pier at dawn", image: pier.png}
      - {id: b, prompt: "The lighthouse, tall", aspect_ratio: "9:16", duration: 3}
      - {id: c, prompt: "A take or two", takes: 2, seed: 18}
  - id: two
    defaults: {aspect_ratio: "21:9"}
    shots:
      - {id: d, prompt: "Anamorphic street", duration: 3}
"""
NEVER_RUN = '      - {id: e, prompt: "Added after the run", duration: 2}\n'
FPS = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("storyboard")
    return finished_run(root, MANIFEST, "cut", then=MANIFEST + NEVER_RUN)


def frames_of(path: Path) -> Iterator[Image.Image]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
            yield image


def frame_at(path: Path, index: int) -> Image.Image:
    return next(img for i, img in enumerate(frames_of(path)) if i == index)


def brightest(img: Image.Image) -> int:
    _, high = cast(tuple[int, int], img.convert("L").getextrema())
    return high


def diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def start_of(run: Run, title: str, picks: dict[str, int] | None = None) -> int:
    """First animatic frame of the segment named ``title``."""
    index = 0
    for seg in plan_animatic(run.manifest, run.state, picks, FPS, 1.0):
        if seg.title == title:
            return index
        index += seg.frames
    raise AssertionError(title)


def test_animatic_is_one_h264_stream_of_the_expected_length(run: Run) -> None:
    path = write_animatic(run.run_dir, run.manifest, run.state)
    assert path == run.run_dir / "animatic.mp4"
    assert not list(run.run_dir.glob(".animatic-*"))  # the temporary file was renamed
    info = probe(path)
    assert (info.codec, info.width, info.height, info.fps) == ("h264", 640, 360, FPS)
    # a 2 s, b 3 s, c (take 1) 2 s, d 3 s, e (never run) 2 s, two 1 s scene slates
    seconds = 2 + 3 + 2 + 3 + 2 + 2 * 1.0
    assert expected_frames(run.manifest, run.state, None, FPS, 1.0) == seconds * FPS
    assert info.frames == seconds * FPS
    assert abs(info.duration_s - seconds) <= 1 / FPS
    sizes = {img.size for img in frames_of(path)}
    assert sizes == {(640, 360)}
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    head = path.read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")  # faststart


def test_animatic_letterboxes_slates_and_missing_shots(run: Run) -> None:
    path = write_animatic(run.run_dir, run.manifest, run.state)
    tall = frame_at(path, start_of(run, "one-b") + 20)  # 9:16 clip: pillarboxed
    assert brightest(tall.crop((0, 0, 100, 360))) < 20
    assert ImageStat.Stat(tall.crop((280, 0, 360, 360))).mean[0] > 5
    wide = frame_at(path, start_of(run, "two-d") + 20)  # 21:9 clip: letterboxed
    assert brightest(wide.crop((0, 0, 640, 40))) < 20
    assert brightest(wide.crop((0, 60, 640, 300))) > 60
    slate = frame_at(path, start_of(run, "two"))  # scene slate with its name
    assert brightest(slate) > 150
    missing = frame_at(path, start_of(run, "two-e") + 12)  # black, with the shot named
    assert ImageStat.Stat(missing.convert("L")).mean[0] < 12
    assert brightest(missing) > 100


def test_picks_choose_which_take_is_cut_in(run: Run) -> None:
    takes = {s.take: run.run_dir / f"shots/{s.id}.mp4" for s in run.manifest.shots if s.take}
    offset = 18  # a frame after the title card: the takes' palettes differ
    own = {take: frame_at(clip, offset) for take, clip in takes.items()}
    assert diff(own[1], own[2]) > 10

    default = write_animatic(run.run_dir, run.manifest, run.state)
    cut = frame_at(default, start_of(run, "one-c-t1") + offset)
    assert diff(cut, own[1]) < 4 < diff(cut, own[2])

    picks = {"one-c": 2}
    picked = write_animatic(run.run_dir, run.manifest, run.state, picks=picks)
    cut = frame_at(picked, start_of(run, "one-c-t2", picks) + offset)
    assert diff(cut, own[2]) < 4 < diff(cut, own[1])
    assert probe(picked).frames == expected_frames(run.manifest, run.state, picks, FPS, 1.0)


def test_clips_are_resampled_by_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: rates\ndefaults: {provider: local, duration: 2}\n"
        "scenes:\n  - id: s\n    shots:\n      - {id: fast, prompt: x}\n"
        "      - {id: short, prompt: y}\n"
    )
    manifest = load_manifest(path)
    (tmp_path / "shots").mkdir()
    for name, fps, seconds in (("fast", 24, 2), ("short", 12, 1)):
        spec = ClipSpec(title=name, prompt="p", duration_s=seconds, width=640, height=360, fps=fps)
        render_clip(spec, tmp_path / f"shots/s-{name}.mp4")
    state = RunState()
    for name in ("fast", "short"):
        rec = ShotRecord(f"s-{name}", ShotState.DONE, output=f"shots/s-{name}.mp4")
        state.shots[rec.id] = rec
    out = write_animatic(tmp_path, manifest, state, fps=FPS, slate_s=0.5)
    frames = list(frames_of(out))
    assert len(frames) == 6 + 2 * 2 * FPS == expected_frames(manifest, state, None, FPS, 0.5)
    source = list(frames_of(tmp_path / "shots/s-fast.mp4"))
    # output frame k of the 24 fps clip is its frame 2k (its progress bar grows every frame)
    for k in (0, 3, 10, 23):
        nearest = min(range(len(source)), key=lambda i: diff(frames[6 + k], source[i]))
        assert nearest == 2 * k
    short = list(frames_of(tmp_path / "shots/s-short.mp4"))  # 1 s clip in a 2 s slot: held
    assert diff(frames[-1], short[-1]) < 3


def test_unreadable_clip_becomes_a_slate_of_the_same_length(run: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 100)
    state = RunState(shots=dict(run.state.shots))
    state.shots["one-a"] = dataclasses.replace(run.state.shots["one-a"], output=str(broken))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "shots").symlink_to(run.run_dir / "shots")
    out = write_animatic(out_dir, run.manifest, state)
    assert probe(out).frames == expected_frames(run.manifest, state, None, FPS, 1.0)
    assert ImageStat.Stat(frame_at(out, FPS + 5).convert("L")).mean[0] < 12
    sheet = write_contact_sheet(out_dir, run.manifest, state)
    left, top, _, _ = sheet_layout(run.manifest).cells["one-a"]
    with Image.open(sheet) as img:  # a card saying "unreadable", in the failure colour
        assert img.convert("RGB").getpixel((left + 2, top + 2)) == MISSING_FILL["unreadable"]


def test_contact_sheet_has_a_labelled_cell_per_take(run: Run) -> None:
    picks = {"one-c": 2}
    path = write_contact_sheet(run.run_dir, run.manifest, run.state, picks=picks, columns=3)
    assert path == run.run_dir / "contact-sheet.png"
    layout = sheet_layout(run.manifest, columns=3)
    with Image.open(path) as img:
        assert img.format == "PNG"
        sheet = img.convert("RGB")
    assert sheet.size == layout.size
    ids = [s.id for s in run.manifest.shots]
    assert list(layout.cells) == ids  # manifest order
    assert len(ids) == 6
    for shot_id in ids:
        cell = sheet.crop(layout.cells[shot_id])
        assert ImageStat.Stat(cell).stddev[0] > 3, shot_id  # a picture or a labelled card
        assert brightest(sheet.crop(layout.labels[shot_id])) > 180, (
            shot_id
        )  # the id is written under it
    left, top, _, _ = layout.cells["two-e"]  # never run: a dark card, not a poster
    assert sheet.getpixel((left + 2, top + 2)) == (36, 37, 44)
    left, top, _, _ = layout.cells["one-c-t2"]  # the picked take is framed
    assert sheet.getpixel((left - 2, top + 20)) == ACCENT
    left, top, _, _ = layout.cells["one-c-t1"]
    assert sheet.getpixel((left - 2, top + 20)) == BACKGROUND
    assert set(layout.scenes) == {"one", "two"}
    top_one, top_two = layout.scenes["one"][1], layout.scenes["two"][1]
    assert all(top_one < layout.cells[i][1] < top_two for i in ids if i.startswith("one-"))
    assert all(layout.cells[i][1] > top_two for i in ids if i.startswith("two-"))


def test_contact_sheet_marks_failed_shots(run: Run, tmp_path: Path) -> None:
    state = RunState(shots=dict(run.state.shots))
    state.shots["one-b"] = dataclasses.replace(
        run.state.shots["one-b"], state=ShotState.FAILED, error="content policy"
    )
    (tmp_path / "shots").symlink_to(run.run_dir / "shots")
    path = write_contact_sheet(tmp_path, run.manifest, state)
    layout = sheet_layout(run.manifest)
    left, top, _, _ = layout.cells["one-b"]
    with Image.open(path) as img:
        assert img.convert("RGB").getpixel((left + 2, top + 2)) == MISSING_FILL["failed"]
    segs = plan_animatic(run.manifest, state, None, FPS, 1.0, tmp_path)
    assert [(s.kind, s.reason) for s in segs if s.title == "one-b"] == [("missing", "failed")]
