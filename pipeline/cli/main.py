"""Command-line interface. The only module that reads environment variables and API keys.

::

    pipeline run MANIFEST [--jobs-dir DIR]    plan, upload, submit, poll, fetch -> DIR/<name>/
    pipeline resume RUN_DIR                   continue an interrupted run; nothing is paid twice
    pipeline status RUN_DIR [--json]          where every shot stands
    pipeline validate MANIFEST                every offline check, before any money is spent
    pipeline cancel RUN_DIR [--shot ID]       cancel unfinished shots, at the provider too
    pipeline repair RUN_DIR [--manifest M]    rebuild a truncated or lost log from the videos
    pipeline sim [--host H] [--port N]        serve every provider simulator until Ctrl-C

Exit codes: 0 all done, 1 some shots failed or need attention, 2 invalid input (nothing was
sent), 3 checkpoint or disk fail-stop, 4 another runner holds the run directory, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from pipeline._util.redaction import RedactingFormatter, redact, register
from pipeline.cli.parser import build_parser
from pipeline.errors import (
    EXIT_ATTENTION,
    EXIT_CHECKPOINT,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    CheckpointError,
    LockedError,
    ManifestError,
    UsageError,
)
from pipeline.providers import KEY_VARIABLES

# Only what every command needs is imported here; each command imports what it uses when it
# runs, so that `status` reads a journal without loading the manifest loader, and `validate`
# checks a manifest without loading the engine, the simulators or the outputs (PyAV, Pillow):
# those are in :mod:`pipeline.cli.commands`. tests/test_cli_imports.py holds this.


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeline`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Third-party pydantic plugins (found by scanning every installed package's entry points:
    # 15 ms of a 0.3 s `validate`) do not observe the manifest's validation. Setting the variable
    # yourself (even to "") keeps your choice.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    for variable in KEY_VARIABLES.values():  # every command, `status` too, masks the keys it sees
        register(os.environ.get(variable or ""))
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        handlers=[handler],
        force=True,
    )
    try:
        return _dispatch(args)
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as exc:  # a bug: say so; the traceback with -v, never a secret in either
        if getattr(args, "verbose", False):
            print(redact(traceback.format_exc()), file=sys.stderr)
        name = type(exc).__name__
        print(
            f"internal error (a bug in pipeline): {name}: {redact(str(exc))}\n"
            "run again with -v for the traceback, and please report it",
            file=sys.stderr,
        )
        return EXIT_ATTENTION


def _stdout_closed() -> int:
    """The reader of stdout went away (``pipeline status RUN | head -2``): end quietly.

    Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from raising
    a second BrokenPipeError (the recipe of Python's ``signal`` documentation).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; map the expected failures to their exit codes (no traceback)."""
    try:
        return _command(args)
    except ManifestError as exc:
        print(f"invalid input:\n{redact(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except UsageError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except LockedError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_LOCKED
    except CheckpointError as exc:
        print(f"checkpoint error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except KeyboardInterrupt:  # before the runner's own signal handling took over
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _command(args: argparse.Namespace) -> int:
    from pipeline.cli import store_cmds  # light; psycopg is imported only when a store is used

    if store_cmds.wanted(args):  # --store URL RUN (or PIPELINE_STORE), and `pull`
        return store_cmds.command(args)
    if args.command == "status":
        return _status(args.run_dir, as_json=args.json)
    if args.command == "validate":
        return _validate(args)
    if args.command == "models":
        from pipeline.cli import models_view

        return models_view.command(args, os.environ)
    if args.command == "worker" or (
        args.command == "run" and (args.store or os.environ.get("PIPELINE_STORE"))
    ):  # the distributed mode (DBOS) is imported only here
        from pipeline.cli import distributed

        return distributed.command(args, os.environ)
    if args.command == "storyboard":  # the outputs only: no engine, HTTP client or simulators
        return _storyboard(args.run_dir)
    from pipeline.cli import commands

    return commands.command(args)


def _storyboard(run_dir: Path) -> int:
    """``pipeline storyboard``: rebuild the outputs; a failure to write one is exit 1."""
    from pipeline import api
    from pipeline.outputs.write import write_outputs

    try:
        written = write_outputs(run_dir, api.manifest_of(run_dir))
    except OSError as exc:
        print(f"could not write the storyboard outputs: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ATTENTION
    print(f"written: {', '.join(p.name for p in written)}")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from pipeline.cli import endpoints
    from pipeline.manifest.loader import load_manifest, print_warnings

    path, network = args.manifest, args.preflight
    manifest = load_manifest(path, strict=args.strict)
    print_warnings(manifest)
    manifest = endpoints.for_command(manifest, args)
    providers = sorted({s.provider for s in manifest.shots})
    print(
        f"{path}: ok: {len(manifest.shots)} shot(s) in {len(manifest.scenes)} scene(s); "
        f"providers: {', '.join(providers)}"
    )
    if not network:
        return EXIT_OK
    from pipeline.cli import commands

    return commands.check_preflight(manifest)


def _status(run_dir: Path, *, as_json: bool) -> int:
    from pipeline import api
    from pipeline.outputs.picks import read_picks
    from pipeline.outputs.summary import attention, render_table, status_json

    state = api.status(run_dir)
    if as_json:
        picks = read_picks(run_dir, state)  # an old run's picks.json counts too
        print(json.dumps(status_json(run_dir.name, state, picks=picks), indent=None))
    else:
        print(render_table(state))
    return EXIT_OK if not attention(state) else 1
