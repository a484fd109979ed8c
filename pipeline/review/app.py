"""``pipeline review RUN_DIR``: the review app's server (aiohttp), until Ctrl-C.

:func:`serve` loads the run (its manifest, its log), generates the session token, binds to
loopback (or the ``--host`` named), prints the URL, and serves the page, its live updates and
the review requests (:mod:`pipeline.review.routes`). Two background tasks run beside it: the
log is followed every :data:`POLL_S` seconds (and a left-over inbox recorded when no runner
holds the run), and the outputs are rebuilt after recorded verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import webbrowser
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
from aiohttp import web

from pipeline.manifest.loader import Manifest
from pipeline.review import security
from pipeline.review.routes import SESSION, TOKEN, routes
from pipeline.review.session import Session

#: Seconds between two looks at the checkpoint.
POLL_S = 0.5
#: Largest request body accepted (bytes): notes are short.
MAX_BODY = 64 * 1024


def build_app(session: Session, token: str, host: str) -> web.Application:
    """The aiohttp application of ``session`` (bound to ``host``; ``token``: the session's)."""
    app = web.Application(middlewares=[security.guard(token, host)], client_max_size=MAX_BODY)
    app[SESSION] = session
    app[TOKEN] = token
    app.add_routes(routes)
    app.cleanup_ctx.append(_background)

    async def stop_streams(app: web.Application) -> None:
        session.tail.close()

    app.on_shutdown.append(stop_streams)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    session = app[SESSION]
    tasks = [
        asyncio.create_task(session.watch(POLL_S)),
        asyncio.create_task(session.rebuild_outputs()),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def url_of(host: str, port: int) -> str:
    """The page's URL for a server bound to ``host``:``port``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


async def serve(
    run_dir: Path,
    manifest: Manifest,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    explicit_host: bool = False,
    open_browser: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the review app of ``run_dir`` until SIGINT or SIGTERM.

    Args:
        run_dir: the run directory (it must hold a checkpoint).
        manifest: the run's manifest (:func:`pipeline.api.manifest_of`).
        host: the address to bind; a non-loopback one only with ``explicit_host``.
        port: the port (0: a free one).
        explicit_host: the user named ``host`` (``--host``).
        open_browser: open the page in the user's browser.
        announce: called with the page's URL once it listens (default: printed on stdout).

    Raises:
        UsageError: ``host`` is not loopback and not explicit.
        CheckpointError: the log cannot be read.
        OSError: the address cannot be bound.
    """
    security.check_bind(host, explicit=explicit_host)
    session = Session(run_dir, manifest)
    await anyio.to_thread.run_sync(session.tail.load)
    token = security.new_token()
    runner = web.AppRunner(build_app(session, token, host), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        url = url_of(host, bound)
        if announce is not None:
            announce(url)
        else:
            print(f"review: {url} (Ctrl-C stops it)", flush=True)
        if not security.is_loopback(host):
            print(
                f"warning: served on {host}: anyone who can reach it can watch the run; "
                "changes still need the page's token",
                file=sys.stderr,
            )
        if open_browser:
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(url)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    finally:
        await runner.cleanup()
