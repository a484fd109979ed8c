"""R20: a provider that echoes the API key in its answers never gets it stored, logged or shown.

The hostile provider is a small aiohttp app speaking RelayDance's task API that puts the key in
every text field it answers with: accepted submits' messages, refusals, failure reasons, error
objects, status strings. The run goes through the CLI; then the run directory (every file),
stdout, stderr, ``status``, ``status --json``, ``report.json`` and the storyboard page are
searched for the key, raw and URL-encoded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

KEY = "rd-canary-7f3a9c2e51b84d06"


def _hostile_app() -> web.Application:
    """RelayDance's task API, answering with the key wherever there is text."""
    tasks: dict[str, str] = {}

    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        if "refuse" in prompt:
            error = {"message": f"invalid key {KEY}", "type": KEY, "code": f"bad:{KEY}"}
            return web.json_response({"error": error}, status=400)
        task_id = f"task_{len(tasks) + 1}"
        tasks[task_id] = prompt
        return web.json_response(
            {"task_id": task_id, "status": "submitted", "message": f"accepted for {KEY}"}
        )

    async def poll(request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        if task_id not in tasks:
            return web.json_response({"error": {"message": f"no task for {KEY}"}}, status=404)
        return web.json_response(
            {
                "task_id": task_id,
                "status": "failure",
                "fail_reason": f"upstream rejected Authorization {KEY} ({quote(KEY)})",
                "message": f"key={KEY}",
                "error": {"message": f"the key {KEY} is not allowed here", "code": KEY},
                "progress": "100%",
            }
        )

    async def models(request: web.Request) -> web.Response:
        entry = {"id": "doubao-seedance-2-0-720p", "object": "model", "owned_by": KEY}
        return web.json_response({"object": "list", "data": [entry]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/video/generations", submit)
    app.router.add_get("/v1/video/generations/{task_id}", poll)
    return app


@pytest.fixture
def hostile_url() -> Iterator[str]:
    """The hostile provider served on 127.0.0.1 from its own thread and event loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_hostile_app(), shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env={**env, "RELAYDANCE_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_r20_an_echoed_key_reaches_no_file_log_or_output(tmp_path: Path, hostile_url: str) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: echo\n"
        "defaults: {provider: relaydance, model: doubao-seedance-2-0-720p, duration: 5}\n"
        f"providers:\n  relaydance: {{base_url: '{hostile_url}', poll_min_s: 0.05, "
        "poll_max_s: 0.1}\n"
        "scenes:\n  - id: a\n    shots:\n"
        "      - {id: fails, prompt: a harbor}\n"
        "      - {id: refused, prompt: please refuse}\n"
    )
    run = _cli("run", "m.yaml", "--no-progress", "-v", "--trust-endpoints", cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # both shots failed, as the provider said
    run_dir = tmp_path / "jobs" / "echo"
    status = _cli("status", str(run_dir), cwd=tmp_path)
    status_json = _cli("status", str(run_dir), "--json", cwd=tmp_path)
    doc = json.loads(status_json.stdout)
    errors = {s["id"]: s["error"] for s in doc["shots"]}
    assert errors["a-fails"] == "the key *** is not allowed here"  # the reason, masked
    assert "invalid key ***" in errors["a-refused"]
    seen = [run.stdout, run.stderr, status.stdout, status.stderr, status_json.stdout]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"checkpoint.jsonl", "report.json", "storyboard.html"}
    seen += [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    for text in seen:
        assert KEY not in text
        assert quote(KEY) not in text
