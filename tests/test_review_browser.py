"""`pipeline review` in a real browser (Playwright driving Debian's headless chromium): two
takes played side by side, one picked, one rejected, a note; the checkpoint, `status --json`,
report.json and the rebuilt animatic follow; a cross-site POST is refused.

Screenshots of the review app and of the static page go to ``tests/output/`` (git-ignored).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from PIL import ImageChops, ImageStat

from pipeline.journal.checkpoint import FILE
from pipeline.journal.snapshot import load_state
from pipeline.models import Event
from pipeline.outputs.animatic import plan_animatic
from pipeline.outputs.storyboard import PAGE
from tests.test_animatic import frame_at
from tests.test_review import Run, cli, events, finished_run, wait_for

sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "output"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
GROUP = '.group[data-key="dawn-s01"]'
VIDEOS = f"[...document.querySelectorAll('{GROUP} video.take')]"


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return finished_run(tmp_path)


@pytest.fixture
def app(run: Run) -> Iterator[str]:
    """``pipeline review RUN_DIR --port 0`` in its own process; yields the page's URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "review", str(run.run_dir), "--port", "0"],
        cwd=run.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found is not None, line + proc.stderr.read() if proc.stderr else line
        yield found.group(0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)  # type: ignore[attr-defined]
    print(f"screenshot: {OUTPUT / name}")


def diff(a: object, b: object) -> float:
    return float(sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3)  # type: ignore[arg-type]


def test_review_two_takes_pick_reject_note(run: Run, app: str, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(app)
    page.wait_for_selector("#live[data-live=on]")
    assert page.locator("article.card").count() == len(run.manifest.shots)

    # Two takes side by side, played and paused together, scrubbed together.
    page.locator(f"{GROUP} button[data-sync=play]").click()
    page.wait_for_function(f"() => {VIDEOS}.every(v => !v.paused && v.currentTime > 0.3)")
    page.locator(f"{GROUP} button[data-sync=pause]").click()
    page.wait_for_function(f"() => {VIDEOS}.every(v => v.paused)")
    page.eval_on_selector(
        f"{GROUP} .scrub",
        "r => { r.value = 500; r.dispatchEvent(new Event('input', {bubbles: true})); }",
    )
    page.wait_for_function(
        f"() => {VIDEOS}.every(v => Math.abs(v.currentTime - v.duration / 2) < .1)"
    )
    # Playing one take from its own controls plays the other (linked).
    page.eval_on_selector("#dawn-s01-t1 video", "v => v.play()")
    page.wait_for_function(f"() => {VIDEOS}.every(v => !v.paused)")
    page.eval_on_selector("#dawn-s01-t1 video", "v => v.pause()")
    page.wait_for_function(f"() => {VIDEOS}.every(v => v.paused)")
    # A play right after a linked scrub, before the seeks have ended, is still the user's.
    page.eval_on_selector(
        f"{GROUP} .scrub",
        "r => { r.value = 250; r.dispatchEvent(new Event('input', {bubbles: true}));"
        " document.querySelector('#dawn-s01-t1 video').play(); }",
    )
    page.wait_for_function(f"() => {VIDEOS}.every(v => !v.paused)")
    page.eval_on_selector("#dawn-s01-t1 video", "v => v.pause()")
    page.wait_for_function(f"() => {VIDEOS}.every(v => v.paused)")

    # Pick take 2, reject take 1, a note on take 2: live on the page from the log.
    page.locator("#dawn-s01-t2 button[data-act=pick]").click()
    page.wait_for_selector("#dawn-s01-t2.picked")
    page.locator("#dawn-s01-t1 button[data-act=reject]").click()
    page.wait_for_selector("#dawn-s01-t1.rejected")
    page.locator("#dawn-s01-t2 textarea").fill("Keep <this> one & its light")
    page.locator("#dawn-s01-t2 form.note button").click()
    page.wait_for_selector("#dawn-s01-t2 .notes li")
    assert "Keep <this> one & its light" in page.locator("#dawn-s01-t2 .notes li").inner_text()
    assert page.locator(f"{GROUP} .group-head").inner_text().lower().endswith("pick: take 2")
    # Filters: only failed shots (none) hides every card; a scene filter keeps its own.
    page.locator('input[name="state"][value="done"]').uncheck()
    assert page.locator("article.card:visible").count() == 0
    page.locator('input[name="state"][value="done"]').check()
    page.locator('select[name="scene"]').select_option("dusk")
    assert page.locator("article.card:visible").count() == 1
    page.locator('select[name="scene"]').select_option("")
    screenshot(page, "review-app.png")
    assert errors == []

    # The checkpoint, status --json, report.json and the rebuilt outputs.
    rd = run.run_dir
    [picked] = events(rd, Event.TAKE_PICKED)
    [rejected] = events(rd, Event.TAKE_REJECTED)
    [note] = events(rd, Event.NOTE_ADDED)
    assert (picked.shot, picked.data["take"]) == ("dawn-s01-t2", 2)
    assert (rejected.shot, rejected.data["rejected"]) == ("dawn-s01-t1", True)
    assert (note.shot, note.data["text"]) == ("dawn-s01-t2", "Keep <this> one & its light")
    status = json.loads(cli("status", str(rd), "--json", cwd=run.root).stdout)
    assert status["picks"] == {"dawn-s01": 2}
    shots = {s["id"]: s for s in status["shots"]}
    assert shots["dawn-s01-t2"]["picked"]
    assert shots["dawn-s01-t1"]["rejected"]
    assert shots["dawn-s01-t2"]["notes"] == ["Keep <this> one & its light"]
    # The page is written last: once it has the note, the animatic of that rebuild is there.
    wait_for(lambda: "its light" in (rd / PAGE).read_text())
    report = json.loads((rd / "report.json").read_text())
    assert report["picks"] == {"dawn-s01": 2}
    assert report["shots"]["dawn-s01-t1"]["rejected"] is True
    assert report["shots"]["dawn-s01-t2"]["notes"][0]["text"] == "Keep <this> one & its light"
    state = load_state(rd / FILE)
    start = 0
    for segment in plan_animatic(run.manifest, state, {"dawn-s01": 2}, 12, 1.0):
        if segment.title == "dawn-s01-t2":
            break
        start += segment.frames
    offset = 18  # after the title card: the takes' palettes differ
    own = {t: frame_at(rd / f"shots/dawn-s01-t{t}.mp4", offset) for t in (1, 2)}
    assert diff(own[1], own[2]) > 10
    cut = frame_at(rd / "animatic.mp4", start + offset)
    assert diff(cut, own[2]) < 4 < diff(cut, own[1])

    static = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    static.goto((rd / PAGE).as_uri())
    assert static.locator("article.card.picked").count() == 1
    assert static.locator("#dawn-s01-t1.rejected").count() == 1
    screenshot(static, "storyboard-page.png")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_cross_site_post_is_refused(run: Run, app: str, browser: object) -> None:
    # Without a browser: no token, a foreign Origin.
    body = json.dumps({"shot": "dawn-s01-t2", "picked": True}).encode()
    post = urllib.request.Request(
        f"{app}api/pick",
        data=body,
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 403
    # From a page of another origin in the browser: a form post and a fetch.
    evil = run.root / "evil"
    evil.mkdir()
    (evil / "index.html").write_text(
        f'<form id="f" method="post" action="{app}api/pick" enctype="text/plain">'
        '<input name=\'{"shot": "dawn-s01-t2", "picked": true, "x": "\' value=\'"}\'></form>'
        f"<script>fetch('{app}api/reroll', {{method: 'POST', mode: 'no-cors', body: "
        "JSON.stringify({shot: 'dawn-s01-t2', confirm: true})});</script>"
    )
    handler = partial(_Quiet, directory=str(evil))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        with page.expect_response(lambda r: r.url.endswith("/api/reroll")) as fetched:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        assert fetched.value.status == 403
        with page.expect_response(lambda r: r.url.endswith("/api/pick")) as posted:
            page.eval_on_selector("#f", "f => f.submit()")
        assert posted.value.status == 403
        assert "cross-site request refused" in posted.value.text()
    finally:
        server.shutdown()
        server.server_close()
    assert events(run.run_dir, Event.TAKE_PICKED, Event.REROLL_REQUESTED) == []
