"""Editor hand-off: ``pipeline export`` and ``RUN_DIR/timeline.otio`` on a real run.

One run of the offline ``local`` provider is shared by the module: two scenes, a shot with two
takes whose second take is picked, and a shot added to the manifest after the run (never run,
so it has no video). Every format is exported through the CLI and read back with
OpenTimelineIO's own adapters; what is expected comes from the checkpoint and from the video
files themselves (PyAV), never from the exporter.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import opentimelineio as otio
import pytest

from pipeline.cli.main import main
from pipeline.cli.parser import build_parser
from pipeline.journal.checkpoint import FILE
from pipeline.journal.snapshot import load_state
from pipeline.outputs.timeline_export import FCPX_RATES, FORMATS, SMPTE_RATES, editorial_rate

ROOT = Path(__file__).resolve().parent.parent

MANIFEST = """\
version: 1
name: handoff
defaults: {provider: local, duration: 2, aspect_ratio: "16:9"}
providers: {local: {latency_s: 0}}
scenes:
  - id: dawn
    shots:
      - {id: a, prompt: "Wide: the pier at dawn", seed: 5}
      - {id: b, prompt: "Close on the knots", takes: 2, seed: 18}
      - {id: c, prompt: "The lighthouse, tall", aspect_ratio: "9:16", duration: 1}
  - id: dusk
    defaults: {aspect_ratio: "21:9"}
    shots:
      - {id: d, prompt: "Anamorphic street at dusk", duration: 3}
"""
#: Added to scene ``dawn`` after the run: a shot without a video, between two that have one.
NEVER_RUN = '      - {id: e, prompt: "Added after the run", duration: 1}\n'
PICKED = "dawn-b-t2"
#: The chosen take of every shot, in manifest order.
CUT = ["dawn-a", PICKED, "dawn-c", "dawn-e", "dusk-d"]


@dataclasses.dataclass(frozen=True)
class Video:
    """What PyAV reads from a shot's file."""

    path: Path
    fps: Fraction
    frames: int

    @property
    def seconds(self) -> Fraction:
        return self.frames / self.fps


@dataclasses.dataclass
class Run:
    run_dir: Path
    videos: dict[str, Video]  # shot id -> its verified video


def read_video(path: Path) -> Video:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert stream.average_rate is not None
        return Video(path.resolve(), Fraction(stream.average_rate), frames)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("export")
    manifest = root / "m.yaml"
    manifest.write_text(MANIFEST)
    code = main(["run", str(manifest), "--jobs-dir", str(root / "jobs"), "--no-progress"])
    assert code == 0
    run_dir = root / "jobs" / "handoff"
    assert main(["pick", str(run_dir), "dawn-b", "2"]) == 0
    manifest.write_text(MANIFEST.replace("  - id: dusk\n", NEVER_RUN + "  - id: dusk\n"))
    state = load_state(run_dir / FILE)
    videos = {
        sid: read_video(run_dir / rec.output) for sid, rec in state.shots.items() if rec.output
    }
    assert set(videos) == {"dawn-a", "dawn-b-t1", "dawn-b-t2", "dawn-c", "dusk-d"}
    return Run(run_dir, videos)


def export(run: Run, fmt: str, *extra: str) -> Path:
    assert main(["export", str(run.run_dir), "--format", fmt, *extra]) == 0
    suffix = {"otio": ".otio", "edl": ".edl", "fcp7xml": ".xml", "fcpxml": ".fcpxml"}[fmt]
    return run.run_dir / f"timeline{suffix}"


def read_back(path: Path, fmt: str, run: Run) -> Any:
    if fmt == "edl":  # an EDL does not say its rate: the one its clips' rate is written at
        rate = editorial_rate(float(run.videos["dawn-a"].fps))
        return otio.adapters.read_from_file(str(path), rate=rate)
    return otio.adapters.read_from_file(str(path))


def chosen_track(timeline: Any, fmt: str) -> Any:
    """The track with the cut: by name in OTIO, Premiere's track name in FCP 7 XML, the
    primary storyline (lane 0) in FCPXML, the only track of an EDL."""
    tracks = list(timeline.video_tracks())
    if fmt == "edl":
        assert len(tracks) == 1
        return tracks[0]
    if fmt == "fcp7xml":
        names = [t.metadata["fcp_xml"]["@MZ.TrackName"] for t in tracks]
        return tracks[names.index("chosen takes")]
    wanted = {"otio": "chosen takes", "fcpxml": "0"}[fmt]
    return next(t for t in tracks if t.name == wanted)


def clip_shot(clip: Any, fmt: str) -> str:
    """The shot id of a clip read back (an EDL's clip name is the file name)."""
    return str(clip.name).removesuffix(".mp4")


def starts(track: Any) -> dict[str, Fraction]:
    """Record start (seconds) of every clip of ``track`` by shot id."""
    out = {}
    for index, item in enumerate(track):
        if isinstance(item, otio.schema.Clip):
            start = track.range_of_child_at_index(index).start_time
            out[clip_shot(item, "")] = Fraction(start.value) / Fraction(start.rate)
    return out


def test_run_writes_the_timeline_beside_the_animatic(run: Run) -> None:
    path = run.run_dir / "timeline.otio"
    assert path.is_file()
    assert (run.run_dir / "animatic.mp4").is_file()
    timeline = otio.adapters.read_from_file(str(path))
    # written by `pipeline run`: the shot added afterwards is not in it; the pick made after
    # the run is, since `pipeline pick` rebuilt the outputs
    assert [c.name for c in chosen_track(timeline, "otio").find_clips()] == [
        "dawn-a",
        PICKED,
        "dawn-c",
        "dusk-d",
    ]
    assert not list(run.run_dir.glob(".timeline*"))  # the temporary file was renamed


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_reads_back_with_the_runs_clips_in_order(run: Run, fmt: str) -> None:
    timeline = read_back(export(run, fmt), fmt, run)
    track = chosen_track(timeline, fmt)
    clips = list(track.find_clips())
    assert [clip_shot(c, fmt) for c in clips] == [s for s in CUT if s != "dawn-e"]
    for clip in clips:
        video = run.videos[clip_shot(clip, fmt)]
        assert clip.media_reference.target_url == video.path.as_uri()
        duration = clip.source_range.duration
        # in frames at the clip's own rate, whatever rate the format wrote it at
        assert duration.rescaled_to(float(video.fps)).value == video.frames
        if fmt == "otio":  # OTIO keeps the file's own rate
            assert (duration.value, duration.rate) == (video.frames, float(video.fps))
    # the missing shot dawn-e is a gap of its requested second: dawn-c ends, 1 s, dusk-d starts
    at = starts(track)
    videos = run.videos
    assert at["dawn-a"] == 0
    assert at[PICKED] == videos["dawn-a"].seconds
    assert at["dusk-d"] - at["dawn-c"] == videos["dawn-c"].seconds + 1


def test_the_otio_timeline_has_the_missing_shot_as_a_named_gap(run: Run) -> None:
    timeline = otio.adapters.read_from_file(str(export(run, "otio")))
    items = list(chosen_track(timeline, "otio"))
    assert len(items) == len(CUT)
    gap = items[CUT.index("dawn-e")]
    assert isinstance(gap, otio.schema.Gap)
    assert gap.name == "dawn-e (missing: pending)"
    assert gap.duration().to_seconds() == 1
    assert gap.metadata["pipeline"]["missing"] == "pending"
    assert gap.metadata["pipeline"]["prompt"] == "Added after the run"


@pytest.mark.parametrize("fmt", ["otio", "fcp7xml", "fcpxml"])
def test_other_takes_are_on_another_track_where_their_shot_starts(run: Run, fmt: str) -> None:
    timeline = read_back(export(run, fmt), fmt, run)
    cut = chosen_track(timeline, fmt)
    others = [t for t in timeline.video_tracks() if t is not cut]
    assert len(others) == 1
    assert [c.name for c in others[0].find_clips()] == ["dawn-b-t1"]
    assert starts(others[0])["dawn-b-t1"] == starts(cut)[PICKED]
    (clip,) = others[0].find_clips()
    video = run.videos["dawn-b-t1"]
    assert clip.media_reference.target_url == video.path.as_uri()
    assert clip.source_range.duration.rescaled_to(float(video.fps)).value == video.frames
    if fmt != "fcpxml":  # the cut plays: the chosen takes are on the top track
        assert list(timeline.video_tracks())[-1] is cut


def test_the_edl_has_one_video_track_of_the_chosen_takes(run: Run) -> None:
    text = export(run, "edl").read_text()
    assert text.startswith("TITLE: handoff")
    assert "dawn-b-t1" not in text  # CMX 3600: one track, so no other takes
    timeline = read_back(run.run_dir / "timeline.edl", "edl", run)
    assert len(list(timeline.tracks)) == 1
    reels = [c.metadata["cmx_3600"]["reel"] for c in timeline.find_clips()]
    assert len(set(reels)) == len(reels)
    assert all(len(r) <= 8 for r in reels)


def test_scenes_are_markers(run: Run) -> None:
    otio_tl = read_back(export(run, "otio"), "otio", run)
    marks = {m.name: m.marked_range.start_time.to_seconds() for m in otio_tl.tracks.markers}
    dusk = float(starts(chosen_track(otio_tl, "otio"))["dusk-d"])
    assert marks == {"dawn": 0, "dusk": dusk}
    fcp7 = read_back(export(run, "fcp7xml"), "fcp7xml", run)
    assert {m.name: m.marked_range.start_time.to_seconds() for m in fcp7.tracks.markers} == marks
    for fmt in ("edl", "fcpxml"):  # no sequence markers: the scene's first clip has it
        tl = read_back(export(run, fmt), fmt, run)
        marked = {
            clip_shot(c, fmt): m.name.lower()
            for c in chosen_track(tl, fmt).find_clips()
            for m in c.markers
        }
        assert marked == {"dawn-a": "dawn", "dusk-d": "dusk"}, fmt


def test_each_clip_says_its_shot_prompt_provider_model_and_seed(run: Run) -> None:
    tl = read_back(export(run, "otio"), "otio", run)
    meta = {c.name: c.metadata["pipeline"] for c in tl.find_clips()}
    assert meta[PICKED]["shot"] == PICKED
    assert meta[PICKED]["prompt"] == "Close on the knots"
    assert (meta[PICKED]["provider"], meta[PICKED]["model"]) == ("local", "previz")
    assert meta[PICKED]["take"] == 2
    assert meta[PICKED]["chosen"] is True
    assert meta["dawn-b-t1"]["chosen"] is False
    assert meta["dawn-a"]["seed"] == 5
    assert meta["dawn-a"]["scene"] == "dawn"

    fcp7 = read_back(export(run, "fcp7xml"), "fcp7xml", run)
    info = {c.name: c.metadata["fcp_xml"]["logginginfo"] for c in fcp7.find_clips()}
    assert info[PICKED]["description"] == "Close on the knots"
    assert (info[PICKED]["scene"], info[PICKED]["shottake"]) == ("dawn", "2")
    assert "local/previz" in info[PICKED]["lognote"]
    assert PICKED in info[PICKED]["lognote"]

    fcpx = read_back(export(run, "fcpxml"), "fcpxml", run)
    fields = {
        c.name: (c.media_reference.metadata["fcpx"], c.media_reference.metadata["fcpx"]["metadata"])
        for c in fcpx.find_clips()
    }
    note, md = fields["dawn-a"]
    assert note["note"] == "Wide: the pier at dawn"
    flat = {k: v for entry in md for k, v in entry.items()}
    assert flat["com.apple.proapps.studio.scene"] == "dawn"
    assert "seed 5" in flat["com.apple.proapps.spotlight.kMDItemDescription"]

    edl = read_back(export(run, "edl"), "edl", run)
    comments = {clip_shot(c, "edl"): c.metadata["cmx_3600"]["comments"] for c in edl.find_clips()}
    assert f"SHOT: {PICKED}" in comments[PICKED]
    assert "PROMPT: Close on the knots" in comments[PICKED]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_no_url_but_the_videos_own_files(run: Run, fmt: str) -> None:
    text = export(run, fmt).read_text()
    urls = re.findall(r"\b([a-z][a-z0-9+.-]*)://([^\s\"'<>]*)", text)
    assert urls
    assert {scheme for scheme, _ in urls} == {"file"}
    assert not any("?" in rest for _, rest in urls)  # no query string: nothing signed
    if fmt == "otio":
        urls = _values(json.loads(text), "target_url")
        assert sorted(urls) == sorted(v.path.as_uri() for v in run.videos.values())


def _values(node: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        own = [node[key]] if key in node else []
        return own + [x for v in node.values() for x in _values(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _values(v, key)]
    return []


def test_output_file_and_errors(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "cut.edl"
    assert main(["export", str(run.run_dir), "--format", "edl", "-o", str(dest)]) == 0
    assert dest.read_text().startswith("TITLE: handoff")
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    capsys.readouterr()

    with pytest.raises(SystemExit) as exc:
        main(["export", str(run.run_dir), "--format", "mov"])
    assert exc.value.code == 2
    assert "invalid choice: 'mov'" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--format", "otio"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--format", "otio"]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    missing = tmp_path / "no-such-dir" / "cut.xml"
    assert main(["export", str(run.run_dir), "--format", "fcp7xml", "-o", str(missing)]) == 2
    assert f"cannot write {missing}" in capsys.readouterr().err


def test_the_parser_offers_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in FORMATS:
        args = build_parser().parse_args(["export", "RUN", "--format", fmt])
        assert (args.format, args.output) == (fmt, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    assert "{" + ",".join(FORMATS) + "}" in capsys.readouterr().out


def test_editorial_rates() -> None:
    assert editorial_rate(25.0) == 25.0
    assert editorial_rate(24000 / 1001) == 24000 / 1001
    assert editorial_rate(12.0) == 24.0  # previs: each frame twice
    assert editorial_rate(15.0) == 30.0
    assert editorial_rate(26.0) == 25.0  # no multiple: the nearest
    assert editorial_rate(24000 / 1001, FCPX_RATES) == 23.98
    assert all(editorial_rate(r) == r for r in SMPTE_RATES)


def test_status_and_the_outputs_module_do_not_load_opentimelineio(run: Run) -> None:
    code = (
        "import sys\n"
        "from pipeline.cli.main import main\n"
        f"main(['status', {str(run.run_dir)!r}])\n"
        "import pipeline.outputs.write, pipeline.outputs.timeline_export\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentimelineio')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
