"""The review app's HTTP routes.

::

    GET  /                      the page (the session token in a <meta>)
    GET  /assets/<name>         storyboard.css, review.css, review.js
    GET  /events?since=N        server-sent events: an ``update`` whenever the log grows
    GET  /api/state             every take as JSON, the picks
    GET  /api/quote?shot=ID     what a re-roll of take ID costs, the budget left
    POST /api/pick              {"shot": ID, "picked": bool}          -> take_picked
    POST /api/reject            {"shot": ID, "rejected": bool}        -> take_rejected
    POST /api/note              {"shot": ID, "text": str}             -> note_added
    POST /api/reroll            {"shot": ID, "confirm": true}         -> reroll_requested
    GET  /<run file>            shots/*, posters/*, thumbs/*, animatic.mp4, contact-sheet[-N].png,
                                report.json, timeline.otio, storyboard.html (Range requests)

POSTs answer ``{"recorded": bool, "shot", "message"}`` (``recorded`` false: queued for the
runner that holds the run). Bad input is a 400 naming the field; the rules of
:mod:`pipeline.review.security` give 403s. The checkpoint itself is never served: its records
may hold one-time download URLs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.journal.inbox import Request
from pipeline.models import Event, Shot
from pipeline.outputs.pages import ASSETS, asset
from pipeline.outputs.sheetfiles import sheet_number
from pipeline.review import views
from pipeline.review.session import Session

SESSION: web.AppKey[Session] = web.AppKey("session", Session)
TOKEN: web.AppKey[str] = web.AppKey("token", str)

#: Files of the run directory the app serves (directories: everything under them).
RUN_FILES = frozenset(
    {"animatic.mp4", "contact-sheet.png", "report.json", "timeline.otio", "storyboard.html"}
)
RUN_DIRS = frozenset({"shots", "posters", "thumbs"})
MAX_NOTE = 2000
_TYPES = {".css": "text/css", ".js": "text/javascript"}
KEEPALIVE_S = 15.0

routes = web.RouteTableDef()


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _take(session: Session, value: object) -> Shot:
    """The take of this run whose id is ``value``.

    Raises:
        web.HTTPBadRequest: none is (a JSON ``{"error": ...}`` answer naming the field).
    """
    shot = session.take(value)
    if shot is None:
        raise _bad("shot: not a take of this run")
    return shot


def _bad(message: str) -> web.HTTPBadRequest:
    """A 400 whose JSON body ``{"error": message}`` names the field (as :func:`_json_error`)."""
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """The review page."""
    html = views.page(request.app[SESSION], request.app[TOKEN])
    headers = {"Cache-Control": "no-store"}
    return web.Response(text=html, content_type="text/html", headers=headers)


@routes.get("/assets/{name}")
async def assets(request: web.Request) -> web.Response:
    """A CSS or JS file of the page."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    kind = _TYPES[Path(name).suffix]
    headers = {"Cache-Control": "no-cache"}
    return web.Response(text=asset(name), content_type=kind, headers=headers)


@routes.get("/api/state")
async def state(request: web.Request) -> web.Response:
    """Every take as JSON values."""
    session = request.app[SESSION]
    session.tail.poll()
    return web.json_response(views.state_json(session), headers={"Cache-Control": "no-store"})


@routes.get("/api/quote")
async def quote(request: web.Request) -> web.Response:
    """The price of a re-roll and the budget left."""
    session = request.app[SESSION]
    shot = _take(session, request.query.get("shot"))
    return web.json_response(session.quote(shot), headers={"Cache-Control": "no-store"})


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


async def _record(session: Session, request: Request) -> web.Response:
    outcome = await session.record(request)
    return web.json_response(
        {"recorded": outcome.recorded, "shot": outcome.shot, "message": outcome.message}
    )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, True)
    if not isinstance(value, bool):
        raise _bad(f"{name}: must be true or false")
    return value


@routes.post("/api/{verdict:pick|reject|note}")
async def verdict(request: web.Request) -> web.Response:
    """Pick (or unpick), reject (or unreject) a take, or add a note to it."""
    session = request.app[SESSION]
    body = await _body(request)
    shot = _take(session, body.get("shot"))
    key, number = f"{shot.scene}-{shot.name}", shot.take or 1
    kind = request.match_info["verdict"]
    if kind == "pick":
        if not session.is_multi(shot):
            return _json_error(400, f"shot: {shot.id} is the only take of {key}")
        picked = _flag(body, "picked")
        data = {"key": key, "take": number if picked else 0}
        return await _record(session, Request(Event.TAKE_PICKED, shot.id, data))
    if kind == "reject":
        data = {"key": key, "take": number, "rejected": _flag(body, "rejected")}
        return await _record(session, Request(Event.TAKE_REJECTED, shot.id, data))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return _json_error(400, "text: write a note")
    if len(text) > MAX_NOTE:
        return _json_error(400, f"text: at most {MAX_NOTE} characters")
    data = {"key": key, "take": number, "text": text.strip()}
    return await _record(session, Request(Event.NOTE_ADDED, shot.id, data))


@routes.post("/api/reroll")
async def reroll(request: web.Request) -> web.Response:
    """Ask for a new, paid take of a shot (``confirm`` must be true: the page showed the price)."""
    session = request.app[SESSION]
    body = await _body(request)
    shot = _take(session, body.get("shot"))
    if body.get("confirm") is not True:
        refused = {"error": "confirm: a re-roll is paid; confirm its price", **session.quote(shot)}
        return web.json_response(refused, status=400)
    key = f"{shot.scene}-{shot.name}"
    data = {"key": key, "take": shot.take or 1}
    return await _record(session, Request(Event.REROLL_REQUESTED, shot.id, data))


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``update`` (:func:`pipeline.review.views.update`) as the log grows."""
    session = request.app[SESSION]
    tail = session.tail
    queue = tail.subscribe()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    since = request.headers.get("Last-Event-ID") or request.query.get("since", "")

    async def send(changes: set[str] | None) -> None:
        payload = json.dumps(views.update(session, changes))
        await response.write(f"id: {tail.version}\nevent: update\ndata: {payload}\n\n".encode())

    try:
        await response.write(b"retry: 2000\n\n")
        if since != str(tail.version):  # missed updates (or a first page of another version)
            await send(None)
        while not tail.closed:
            try:
                changes = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            while not queue.empty():  # one update for a burst of records
                more = queue.get_nowait()
                changes = None if changes is None or more is None else changes | more
            if tail.closed:
                break
            await send(changes)
        await response.write_eof()
    except ConnectionResetError:  # the page went away
        pass
    finally:
        tail.unsubscribe(queue)
    return response


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.Response:
    """No icon (a browser asks for one)."""
    return web.Response(status=204)


@routes.get("/{path:.+}")
async def run_file(request: web.Request) -> web.FileResponse:
    """A file of the run directory the pages link (see :data:`RUN_FILES`, :data:`RUN_DIRS`)."""
    session = request.app[SESSION]
    rel = Path(request.match_info["path"])
    parts = rel.parts
    allowed = (len(parts) == 1 and (parts[0] in RUN_FILES or sheet_number(parts[0]))) or (
        len(parts) == 2 and parts[0] in RUN_DIRS and not parts[1].startswith(".")
    )
    if not allowed or any(p in ("..", ".", "") for p in parts):
        raise web.HTTPNotFound()
    root = session.run_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
