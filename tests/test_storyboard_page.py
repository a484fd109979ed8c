"""storyboard.html and poster frames, on a real run of the local provider (real H.264 clips).

The run has two scenes, a shot with two takes, a 9:16 shot, a prompt carrying ``<script>`` and a
shot whose first frame is a truncated JPEG: validation accepts its header, the local renderer
fails on its pixels, so the page shows one genuinely failed shot.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import anyio
import av
import pytest
from PIL import Image

from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import load
from pipeline.journal.state import RunState, replay
from pipeline.manifest.loader import Manifest, load_manifest
from pipeline.models import ShotState
from pipeline.outputs.posters import POSTERS, ensure_posters, poster_frame
from pipeline.outputs.storyboard import PAGE, write_storyboard
from pipeline.render.clips import probe

EVIL = "Wide <script>alert('x')</script> & \"quotes\" </article>"
MANIFEST = """\
version: 1
name: tiny
defaults: {provider: local, model: previz, duration: 1, aspect_ratio: "16:9"}
providers: {local: {max_in_flight: 4, latency_s: 0}}
scenes:
  - id: a
    shots:
      - id: s01
        prompt: PROMPT
      - id: s02
        prompt: Two takes of the pier
        image: pier.png
        takes: 2
  - id: b
    defaults: {aspect_ratio: "9:16"}
    shots:
      - id: s01
        prompt: A portrait shot
      - id: s02
        prompt: A broken first frame
        image: broken.jpg
"""


@dataclass
class Run:
    dir: Path
    manifest: Manifest
    state: RunState


@dataclass
class Page(HTMLParser):
    """Cards, images, videos, every attribute value and the text of the prompt paragraphs."""

    cards: list[dict[str, str]] = field(default_factory=list)
    imgs: list[dict[str, str]] = field(default_factory=list)
    videos: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    attr_values: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    _in_prompt: bool = False

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        self.attr_values.extend(a.values())
        if tag == "article":
            self.cards.append(a)
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "video":
            self.videos.append(a)
        elif tag == "p" and "prompt" in a.get("class", ""):
            self._in_prompt = True
            self.prompts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_prompt = False

    def handle_data(self, data: str) -> None:
        if self._in_prompt:
            self.prompts[-1] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def make_run(root: Path) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (320, 180), (40, 90, 160)).save(root / "pier.png")
    buf = io.BytesIO()
    Image.effect_noise((640, 360), 60).convert("RGB").save(buf, "JPEG")
    (root / "broken.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "m.yaml").write_text(MANIFEST.replace("PROMPT", json.dumps(EVIL)))
    manifest = load_manifest(root / "m.yaml")
    run_dir = root / "jobs" / manifest.name
    result = anyio.run(execute, manifest, run_dir, RunOptions())
    assert result.state.shots["b-s02"].state == ShotState.FAILED
    state = replay(load(run_dir / "checkpoint.jsonl", repair=False).records)
    return Run(run_dir, manifest, state)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    r = make_run(tmp_path_factory.mktemp("storyboard"))
    ensure_posters(r.dir, r.state)
    write_storyboard(r.dir, r.manifest, r.state, picks={"a-s02": 2})
    return r


def test_one_card_per_shot_in_manifest_order_with_states(run: Run) -> None:
    page = parse(run.dir / PAGE)
    assert [c["data-shot"] for c in page.cards] == [s.id for s in run.manifest.shots]
    states = {c["data-shot"]: c["data-state"] for c in page.cards}
    assert states == {"a-s01": "done", "a-s02-t1": "done", "a-s02-t2": "done", "b-s01": "done",
                      "b-s02": "failed"}  # fmt: skip
    text = (run.dir / PAGE).read_text()
    assert "render failed: image file is truncated" in text
    assert "<h1>tiny</h1>" in text


def test_posters_are_jpegs_of_each_clip_size(run: Run) -> None:
    page = parse(run.dir / PAGE)
    done = [s for s, r in run.state.shots.items() if r.state == ShotState.DONE]
    posters = [i["src"] for i in page.imgs if i.get("class") == "poster"]
    assert sorted(posters) == sorted(f"{POSTERS}/{s}.jpg" for s in done)
    for shot in done:
        info = probe(run.dir / "shots" / f"{shot}.mp4")
        with Image.open(run.dir / POSTERS / f"{shot}.jpg") as img:
            assert img.format == "JPEG"
            assert img.size == (info.width, info.height)
    assert not (run.dir / POSTERS / "b-s02.jpg").exists()
    assert probe(run.dir / "shots" / "b-s01.mp4").height > probe(run.dir / "shots/b-s01.mp4").width


def test_every_video_and_poster_link_exists_and_is_relative(run: Run) -> None:
    page = parse(run.dir / PAGE)
    assert len(page.videos) == 4
    for v in page.videos:
        assert v["preload"] == "none"
        assert "controls" in v
        assert v["src"].startswith("shots/")
        assert (run.dir / v["src"]).is_file()
        assert v["poster"].startswith("posters/")
        assert (run.dir / v["poster"]).is_file()


def test_no_network_reference_no_script(run: Run) -> None:
    text = (run.dir / PAGE).read_text()
    assert not re.search(r"https?:|//[a-z]|@import|url\(", text, re.IGNORECASE)
    page = parse(run.dir / PAGE)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert all(not v.lower().startswith(("http", "//", "javascript")) for v in page.attr_values)


def test_prompts_are_escaped(run: Run) -> None:
    text = (run.dir / PAGE).read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    page = parse(run.dir / PAGE)
    assert page.prompts[0] == EVIL  # the text a reader sees is the prompt as written
    assert len(page.cards) == len(run.manifest.shots)  # "</article>" in a prompt closed nothing


def test_picked_take_is_marked(run: Run, tmp_path: Path) -> None:
    picked = {c["data-shot"] for c in parse(run.dir / PAGE).cards if "picked" in c["class"]}
    assert picked == {"a-s02-t2"}
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    write_storyboard(copy, run.manifest, run.state)
    assert not any("picked" in c["class"] for c in parse(copy / PAGE).cards)


def test_header_counts_and_unknown_cost(run: Run, tmp_path: Path) -> None:
    text = (run.dir / PAGE).read_text()
    assert re.search(r"<b[^>]*>4</b><span>done</span>", text)
    assert re.search(r"<b[^>]*>1</b><span>failed</span>", text)
    assert text.count(">$0.00</dd>") == 4  # the offline local renderer is free: $0, known
    assert text.count(">not charged</dd>") == 1  # the failed render was refunded
    assert "unpriced" not in text
    state = replay(load(run.dir / "checkpoint.jsonl", repair=False).records)
    for rec in state.shots.values():  # as if on a provider without a price table
        rec.cost_usd = rec.est_usd = None
    state.shots["a-s01"].cost_usd = 0.4
    state.shots["b-s01"].est_usd = 0.35
    state.shots["b-s02"].est_usd = 0.5  # estimated, then refunded: not counted
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    text = write_storyboard(copy, run.manifest, state).read_text()
    assert ">$0.40</dd>" in text
    assert ">≈$0.35 est.</dd>" in text
    assert "$0.75 + 2 unpriced" in text
    assert text.count(">not charged</dd>") == 1


def test_write_is_atomic_and_leaves_no_temporaries(run: Run) -> None:
    leftovers = [p.name for p in (run.dir).rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert (run.dir / PAGE).stat().st_mode & 0o777 == 0o644


def test_ensure_posters_skips_fresh_and_redoes_stale(run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy, copy_function=shutil.copy2)
    posters = ensure_posters(copy, run.state)
    assert sorted(posters) == ["a-s01", "a-s02-t1", "a-s02-t2", "b-s01"]
    before = {k: p.stat().st_mtime_ns for k, p in posters.items()}
    assert {k: p.stat().st_mtime_ns for k, p in ensure_posters(copy, run.state).items()} == before
    video = copy / "shots" / "a-s01.mp4"
    newer = before["a-s01"] + 5_000_000_000
    os.utime(video, ns=(newer, newer))
    after = ensure_posters(copy, run.state)
    assert after["a-s01"].stat().st_mtime_ns > before["a-s01"]
    assert after["b-s01"].stat().st_mtime_ns == before["b-s01"]


def _two_frame_clip(dest: Path) -> None:
    """A 1/3 s clip: a red frame then a blue one (too short to seek in)."""
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=6)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for colour in ((220, 20, 20), (20, 20, 220)):
            image = Image.new("RGB", (64, 48), colour)
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_poster_frame_middle_versus_first_and_short_clips(run: Run, tmp_path: Path) -> None:
    clip = run.dir / "shots" / "a-s02-t1.mp4"  # title card first, then the blue pier image
    first = poster_frame(clip, tmp_path / "first.jpg", at=0.0)
    middle = poster_frame(clip, tmp_path / "middle.jpg")
    with Image.open(first) as f, Image.open(middle) as m:
        assert f.size == m.size == (640, 360)
        assert f.tobytes() != m.tobytes()
    short = tmp_path / "short.mp4"
    _two_frame_clip(short)
    with Image.open(poster_frame(short, tmp_path / "short.jpg", at=0.9)) as img:
        r, _, b = img.convert("RGB").getpixel((32, 24))  # type: ignore[misc]
        assert r > 150  # the first (red) frame
        assert b < 100
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises((OSError, ValueError)):
        poster_frame(tmp_path / "notes.mp4", tmp_path / "bad.jpg")
    assert not (tmp_path / "bad.jpg").exists()


# ----- in a real browser -----------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
]

PROBE = """<!doctype html><html><body>
<iframe id="desktop" src="PAGE" style="width:1440px;height:9000px"></iframe>
<iframe id="phone" src="PAGE" style="width:390px;height:16000px"></iframe>
<pre id="out">pending</pre>
<script>
const res = {};
function probe(f, tries) {
  const d = f.contentDocument;
  const imgs = [...d.images];
  const loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  if (loaded < imgs.length && tries > 0) { setTimeout(() => probe(f, tries - 1), 100); return; }
  res[f.id] = {cards: d.querySelectorAll("article.card").length, imgs: imgs.length, loaded,
               posters: d.querySelectorAll("img.poster").length,
               scrollWidth: d.documentElement.scrollWidth, width: d.documentElement.clientWidth};
  if (Object.keys(res).length < 2) return;
  document.getElementById("out").textContent = JSON.stringify(res);
}
for (const f of document.querySelectorAll("iframe")) f.addEventListener("load", () => probe(f, 40));
</script></body></html>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed")
    profile = tmp_path / "profile"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)


def test_every_poster_loads_and_phone_width_does_not_overflow(run: Run, tmp_path: Path) -> None:
    wrapper = tmp_path / "probe.html"
    wrapper.write_text(PROBE.replace("PAGE", (run.dir / PAGE).as_uri()))
    out = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", wrapper.as_uri()).stdout
    found = re.search(r'<pre id="out">(.*?)</pre>', out, re.DOTALL)
    assert found is not None, out[-2000:]
    assert found.group(1) != "pending", out[-2000:]
    res = json.loads(found.group(1).replace("&quot;", '"'))
    done = sum(1 for r in run.state.shots.values() if r.state == ShotState.DONE)
    for view in ("desktop", "phone"):
        assert res[view]["cards"] == len(run.manifest.shots)
        assert res[view]["imgs"] == res[view]["loaded"]  # posters and input thumbnails
        assert res[view]["posters"] == done  # one poster per finished card
        assert res[view]["scrollWidth"] <= res[view]["width"]  # no sideways scrolling


@pytest.mark.parametrize("width", [1440, 390])
def test_screenshot_is_not_blank(run: Run, tmp_path: Path, width: int) -> None:
    shot = tmp_path / "shot.png"
    chromium(
        tmp_path,
        f"--window-size={width},1600",
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        (run.dir / PAGE).as_uri(),
    )
    with Image.open(shot) as img:
        assert img.size == (width, 1600)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 2000  # posters, text and badges, not a blank page
    count, background = max(colours)  # the most common colour: the page's dark background
    assert isinstance(background, tuple)
    assert sum(background) < 3 * 40
    assert count < width * 1600 * 0.9


def test_every_file_the_page_links_can_be_read_by_a_web_server(run: Run, tmp_path: Path) -> None:
    """The page, and every output it links (animatic, contact sheet, report.json, timeline,
    videos, posters), are readable by other users (0644: served from the run directory by
    a web server, or opened by an editor on another account); the checkpoint stays 0600."""
    import stat
    import sys

    copy = tmp_path / "served"
    shutil.copytree(run.dir, copy)

    def storyboard() -> None:
        out = subprocess.run(
            [sys.executable, "-m", "pipeline", "storyboard", str(copy)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr

    storyboard()
    kept = ("animatic.mp4", "contact-sheet.png")
    for name in kept:  # as an older version left them: 0600
        (copy / name).chmod(0o600)
    written = {name: (copy / name).stat().st_mtime_ns for name in kept}
    storyboard()  # nothing changed: both are kept (not written again), and made readable
    assert {name: (copy / name).stat().st_mtime_ns for name in kept} == written
    html = (copy / PAGE).read_text()
    linked = {m for m in re.findall(r'(?:href|src|poster)="([^"#:?]+)"', html) if m}
    for name in ("animatic.mp4", "contact-sheet.png", "report.json", "timeline.otio"):
        assert name in linked
    for name in sorted(linked | {PAGE}):
        mode = stat.S_IMODE((copy / name).stat().st_mode)
        assert mode & 0o044 == 0o044, f"{name}: {oct(mode)}"
    assert stat.S_IMODE((copy / "checkpoint.jsonl").stat().st_mode) == 0o600
