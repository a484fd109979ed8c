"""The distributed mode's commands: ``pipeline run MANIFEST --store URL`` and ``pipeline worker``.

Imported by :mod:`pipeline.cli.main` only for them: the embedded mode never loads DBOS. The store
is ``--store URL`` or, without the flag, the variable ``PIPELINE_STORE``. API keys come from the
environment, as for embedded runs: each worker uses its own (the store never holds a key).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType

from pipeline._util.redaction import register
from pipeline.errors import EXIT_ATTENTION, EXIT_INTERRUPTED, EXIT_OK, UsageError
from pipeline.providers import KEY_VARIABLES

STORE_VARIABLE = "PIPELINE_STORE"


def _store(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    from pipeline.journal.pgconn import check_url

    dsn = args.store or environ.get(STORE_VARIABLE)
    if not dsn:
        raise UsageError(f"--store URL (or {STORE_VARIABLE}) names no store")
    return check_url(dsn)


def _keys(environ: Mapping[str, str]) -> dict[str, str]:
    """The API key variables of this environment (the built-in ones and any ``*_API_KEY``).

    Each value is registered for redaction: no log line or message ever shows it.
    """
    names = {v for v in KEY_VARIABLES.values() if v} | {
        n for n in environ if n.endswith("_API_KEY")
    }
    keys = {n: environ[n] for n in names if environ.get(n)}
    for value in keys.values():
        register(value)
    return keys


def command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``pipeline run --store`` or ``pipeline worker``; returns the exit code.

    Raises:
        UsageError: no store, a bad store URL or an unreachable store (named without its
            password), a flag the distributed mode does not take, a manifest it cannot run.
        ManifestError: the manifest is invalid.
    """
    dsn = _store(args, environ)
    if args.command == "worker":
        providers = [p.strip() for p in (args.providers or "").split(",") if p.strip()]
        return _work(dsn, _keys(environ), providers or None)
    return _run(args, dsn, environ)


def _run(args: argparse.Namespace, dsn: str, environ: Mapping[str, str]) -> int:
    from pipeline.cli import endpoints
    from pipeline.manifest.loader import load_manifest, print_warnings

    for flag in ("simulate", "retry_failed", "resubmit_ambiguous", "shot"):
        if getattr(args, flag, None):
            name = "--" + flag.replace("_", "-")
            raise UsageError(f"{name} is not available with --store (see docs/scale.md)")
    manifest = load_manifest(args.manifest, strict=args.strict)
    print_warnings(manifest)
    manifest = endpoints.for_command(manifest, args)
    from pipeline.distributed import submitrun, worker, workflows

    submitrun.check(manifest)  # before anything is written to the store
    w = worker.start(dsn, _keys(environ), work=not args.no_work)
    try:
        started = submitrun.start_run(manifest, dsn, max_usd=args.max_usd)
        verb = "started" if started.created else "joined"
        print(
            f"run {started.run_id} {verb}: {started.shots} shot(s) on "
            f"{', '.join(started.queues)} ({started.new} newly planned)"
        )
        for warning in started.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.no_work:
            print(f"queued; workers: pipeline worker --store <URL>; then: pipeline status "
                  f"--store <URL> {started.run_id}")  # fmt: skip
            return EXIT_OK
        finals = _until_done(lambda: submitrun.wait_run(started.workflow_id))
        if finals is None:
            return EXIT_INTERRUPTED
        print(f"run {started.run_id}: {workflows.summary(finals)}")
        print(f"videos: pipeline pull {started.run_id} --store <URL>")
        return EXIT_OK if set(finals) <= {"done", "cancelled"} else EXIT_ATTENTION
    finally:
        w.stop()


def _until_done(wait: object) -> dict[str, int] | None:
    """Call ``wait()`` in a thread; None when interrupted (Ctrl-C or SIGTERM) first."""
    out: dict[str, dict[str, int]] = {}
    done = threading.Event()

    def target() -> None:
        try:
            out["finals"] = wait()  # type: ignore[operator]
        finally:
            done.set()

    threading.Thread(target=target, daemon=True).start()
    if not _wait_or_signal(done):
        return None
    return out.get("finals", {})


def _wait_or_signal(done: threading.Event) -> bool:
    """Wait for ``done``; False when SIGINT/SIGTERM came first."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.2):
            if stop.is_set():
                print("stopping: the paid calls in the air finish first", file=sys.stderr)
                return False
        return True
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _work(dsn: str, keys: Mapping[str, str], providers: list[str] | None) -> int:
    from pipeline.distributed import worker

    logging.getLogger("pipeline").setLevel(logging.INFO)
    w = worker.start(dsn, keys, providers=providers)
    which = ", ".join(providers) if providers else "every provider"
    print(f"worker {w.executor.executor_id}: executing queued shots of {which}; Ctrl-C stops")
    sys.stdout.flush()
    try:
        _wait_or_signal(threading.Event())
    finally:
        w.stop()
    return EXIT_OK
