"""The review app over HTTP (aiohttp's test client on loopback): who may change what, what it
serves, and its live updates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from pipeline.errors import UsageError
from pipeline.journal.checkpoint import FILE, load
from pipeline.models import Event
from pipeline.review import security
from pipeline.review.app import build_app, serve
from pipeline.review.session import Session
from tests.test_review import Run, finished_run

TOKEN = "t0k3n-for-tests"


@dataclass
class App:
    run: Run
    client: TestClient  # type: ignore[type-arg]
    session: Session

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def post(self, path: str, body: object, **headers: str) -> ClientResponse:
        return await self.client.post(path, data=json.dumps(body), headers=headers)

    def records(self) -> int:
        return len(load(self.run.run_dir / FILE, repair=False).records)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return finished_run(tmp_path_factory.mktemp("http"))


@pytest.fixture
async def app(finished: Run) -> AsyncIterator[App]:
    session = Session(finished.run_dir, finished.manifest)
    session.tail.load()
    server = TestServer(build_app(session, TOKEN, "127.0.0.1"), host="127.0.0.1")
    async with TestClient(server) as client:
        yield App(finished, client, session)


async def test_state_changes_need_the_token_and_the_same_origin(app: App) -> None:
    before = app.records()
    note = {"shot": "dawn-s02", "text": "warmer"}
    assert (await app.post("/api/note", note)).status == 403  # no token
    assert (await app.post("/api/note", note, **{"X-Review-Token": "wrong"})).status == 403
    good = {"X-Review-Token": TOKEN}
    foreign = await app.post("/api/note", note, Origin="http://evil.example", **good)
    assert foreign.status == 403
    site = await app.post("/api/note", note, **{"Sec-Fetch-Site": "cross-site"}, **good)
    assert site.status == 403
    reroll = await app.post(
        "/api/reroll",
        {"shot": "dawn-s02", "confirm": True},
        **good | {"Origin": "http://evil.example"},
    )
    assert reroll.status == 403
    assert app.records() == before  # nothing was written
    ok = await app.post("/api/note", note, Origin=app.origin, **good)
    assert ok.status == 200
    assert (await ok.json())["recorded"] is True
    assert app.records() == before + 1


async def test_a_rebinding_host_gets_nothing(app: App) -> None:
    page = await app.client.get("/", headers={"Host": f"evil.example:{app.client.port}"})
    assert page.status == 403
    assert TOKEN not in await page.text()
    page = await app.client.get("/", headers={"Host": f"localhost:{app.client.port}"})
    assert page.status == 200
    html = await page.text()
    assert f'<meta name="review-token" content="{TOKEN}">' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


async def test_only_the_run_files_the_pages_link_are_served(app: App) -> None:
    video = await app.client.get("/shots/dawn-s02.mp4", headers={"Range": "bytes=0-99"})
    assert video.status == 206  # players seek with ranges
    assert len(await video.read()) == 100
    for path in ("/animatic.mp4", "/report.json", "/contact-sheet.png", "/assets/review.js"):
        assert (await app.client.get(path)).status == 200, path
    sheet = app.run.run_dir / "contact-sheet.png"
    (app.run.run_dir / "contact-sheet-2.png").write_bytes(sheet.read_bytes())  # a second sheet
    assert (await app.client.get("/contact-sheet-2.png")).status == 200
    (app.run.run_dir / "contact-sheet-02.png").write_bytes(sheet.read_bytes())  # not a sheet's name
    for path in (
        "/contact-sheet-02.png",
        "/contact-sheet-1.png",
        "/contact-sheet-9.png",
        "/checkpoint.jsonl",
        "/shots/../checkpoint.jsonl",
        "/m.yaml",
        "/shots/%2e%2e/checkpoint.jsonl",
        "/local-provider/ledger.json",
        "/assets/../../pyproject.toml",
    ):
        assert (await app.client.get(path)).status == 404, path


async def test_bad_input_is_refused_with_the_field(app: App) -> None:
    good = {"X-Review-Token": TOKEN}
    cases = [
        ("/api/note", {"shot": "nope", "text": "x"}, "shot"),
        ("/api/note", {"shot": "dawn-s02", "text": "  "}, "text"),
        ("/api/note", {"shot": "dawn-s02", "text": "x" * 2001}, "text"),
        ("/api/pick", {"shot": "dawn-s02"}, "only take"),
        ("/api/pick", {"shot": "dawn-s01-t1", "picked": "yes"}, "picked"),
        ("/api/reroll", {"shot": "dawn-s01-t1"}, "confirm"),
        ("/api/reroll", {"shot": "nope", "confirm": True}, "shot"),
        ("/api/pick", {"shot": 7}, "shot"),
    ]
    for path, body, field in cases:
        res = await app.post(path, body, **good)
        assert res.status == 400, (path, body)
        assert field in (await res.json())["error"], (path, body)
    unknown = await app.client.get("/api/quote", params={"shot": "nope"})
    assert (unknown.status, await unknown.json()) == (
        400,
        {"error": "shot: not a take of this run"},
    )
    refused = await app.post("/api/reroll", {"shot": "dawn-s01-t1"}, **good)
    quote = await refused.json()
    assert (quote["new_take"], quote["price"]) == ("dawn-s01-t3", "$0.00")  # local is free
    assert (await app.client.post("/api/note", data="[1]", headers=good)).status == 400


async def test_the_quote_shows_the_price_and_the_budget_left(app: App) -> None:
    res = await app.client.get("/api/quote", params={"shot": "dusk-s01"})
    quote = await res.json()
    assert quote["new_take"] == "dusk-s01-t2"
    assert quote["usd"] == 0.0
    assert quote["limit_usd"] is None
    assert quote["fits"] is None
    assert "No budget set" in quote["budget"]


async def test_events_stream_an_update_when_the_log_grows(app: App) -> None:
    version = app.session.tail.version
    async with app.client.get("/events", params={"since": str(version)}) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        res = await app.post(
            "/api/reject", {"shot": "dawn-s01-t1", "rejected": True}, **{"X-Review-Token": TOKEN}
        )
        assert (await res.json())["recorded"] is True

        async def next_update() -> dict[str, object]:
            data = ""
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    data = line[6:]
                elif line == "\n" and data:
                    update: dict[str, object] = json.loads(data)
                    return update

        update = await asyncio.wait_for(next_update(), 20)
    groups = update["groups"]
    assert isinstance(groups, list)
    [group] = groups
    assert group["key"] == "dawn-s01"
    assert group["takes"] == ["dawn-s01-t1", "dawn-s01-t2"]
    assert 'class="card rejected" id="dawn-s01-t1"' in group["html"]
    [rec] = [
        r for r in load(app.run.run_dir / FILE, repair=False).records if r.ev == Event.TAKE_REJECTED
    ]
    assert rec.shot == "dawn-s01-t1"
    assert rec.data["rejected"] is True


def test_binding_beyond_loopback_must_be_asked_for(finished: Run) -> None:
    assert security.is_loopback("127.0.0.1")
    assert security.is_loopback("::1")
    assert not security.is_loopback("0.0.0.0")
    with pytest.raises(UsageError, match=r"--host 0\.0\.0\.0"):
        security.check_bind("0.0.0.0", explicit=False)
    security.check_bind("0.0.0.0", explicit=True)

    async def start() -> None:
        await serve(finished.run_dir, finished.manifest, host="192.0.2.7", port=0)

    with pytest.raises(UsageError, match="not a loopback address"):
        asyncio.run(start())
    assert security.host_allowed("127.0.0.1:8765", "127.0.0.1")
    assert security.host_allowed("[::1]:8765", "127.0.0.1")
    assert security.host_allowed("studio.lan:8765", "studio.lan")  # the --host named
    assert not security.host_allowed("evil.example:8765", "127.0.0.1")
    assert not security.host_allowed("", "127.0.0.1")


async def test_only_takes_played_side_by_side_load_their_metadata(app: App) -> None:
    """A page of thousands of takes must not ask for every video: a single take's player
    loads nothing until played; the takes of one shot load their lengths (linked scrubbing)."""
    import re

    html = await (await app.client.get("/")).text()
    players = re.findall(r'<video class="take"[^>]*preload="(\w+)"[^>]*src="([^"]+)"', html)
    found = {src: how for how, src in players}
    assert found["shots/dawn-s02.mp4"] == "none"
    assert found["shots/dusk-s01.mp4"] == "none"
    assert found["shots/dawn-s01-t1.mp4"] == found["shots/dawn-s01-t2.mp4"] == "metadata"
