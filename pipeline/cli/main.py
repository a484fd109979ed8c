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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from pipeline import api, sim
from pipeline._util.redaction import RedactingFormatter, redact, register
from pipeline.cli import endpoints, models_view
from pipeline.cli.parser import build_parser
from pipeline.engine.actions import adopt, cancel
from pipeline.engine.options import (
    EXIT_ATTENTION,
    EXIT_CHECKPOINT,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    RunOptions,
    RunResult,
    provider_settings,
)
from pipeline.engine.plan import Plan, make_plan, render_plan
from pipeline.engine.preflight import preflight, render_problems
from pipeline.engine.progress import LoggingObserver, NullObserver, Observer, TqdmObserver
from pipeline.engine.repair import repair
from pipeline.errors import CheckpointError, LockedError, ManifestError, UsageError
from pipeline.journal.snapshot import load_state
from pipeline.manifest.loader import Manifest, load_manifest, print_warnings
from pipeline.outputs.picks import set_pick
from pipeline.outputs.summary import attention, render_table, status_json
from pipeline.outputs.write import write_outputs
from pipeline.providers import PROVIDERS
from pipeline.sim.common import SimConfig

CHECKPOINT = "checkpoint.jsonl"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeline`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    for spec in PROVIDERS.values():  # every command, `status` too, masks the keys it can see
        register(os.environ.get(spec.defaults.api_key_env or ""))
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
    if args.command == "models":
        return models_view.command(args, os.environ)
    if args.command == "validate":
        return _validate(args)
    if args.command == "status":
        return _status(args.run_dir, as_json=args.json)
    if args.command == "cancel":
        return _cancel(args)
    if args.command == "sim":
        return anyio.run(_serve_simulators, args.host, args.port, args.latency)
    if args.command == "plan":
        return _plan(args)
    if args.command == "pick":
        manifest = api.manifest_of(args.run_dir)
        picks = set_pick(args.run_dir, manifest, args.shot, args.take)
        print(f"{args.shot}: take {picks[args.shot]} chosen")
        return _outputs(args.run_dir, manifest)
    if args.command == "storyboard":
        return _outputs(args.run_dir, api.manifest_of(args.run_dir))
    if args.command == "repair":
        return _repair(args.run_dir, args.manifest)
    if args.command == "adopt":
        manifest = _trusted(api.manifest_of(args.run_dir), args)
        anyio.run(
            partial(
                adopt,
                args.run_dir,
                args.shot,
                args.job_id,
                file=str(manifest.path),
                simulate=args.simulate,
            )
        )
        print(f"{args.shot}: adopted job {args.job_id}; polling it now")
        return _run(manifest, args.run_dir, args)
    if args.command == "resume":
        manifest = _trusted(api.manifest_of(args.run_dir), args)
        return _run(manifest, args.run_dir, args)
    manifest = load_manifest(args.manifest, strict=args.strict)
    print_warnings(manifest)
    return _run(_trusted(manifest, args), args.jobs_dir / manifest.name, args)


def _trusted(manifest: Manifest, args: argparse.Namespace) -> Manifest:
    """``manifest`` with the endpoints and key variables the user chose or confirmed.

    Raises:
        ManifestError: the manifest asks for a host or variable the user did not confirm
            (:mod:`pipeline.cli.endpoints`); nothing has been sent.
    """
    return endpoints.check(
        manifest,
        endpoints.load_user_config(os.environ),
        trust=args.trust_endpoints,
        providers=not getattr(args, "simulate", False),
        command=args.command,
    )


def _validate(args: argparse.Namespace) -> int:
    path, network = args.manifest, args.preflight
    manifest = load_manifest(path, strict=args.strict)
    print_warnings(manifest)
    manifest = _trusted(manifest, args)
    providers = sorted({s.provider for s in manifest.shots})
    print(
        f"{path}: ok: {len(manifest.shots)} shot(s) in {len(manifest.scenes)} scene(s); "
        f"providers: {', '.join(providers)}"
    )
    if not network:
        return EXIT_OK
    problems = anyio.run(
        partial(preflight, manifest, api_keys=_api_keys(manifest), run_dir=manifest.path.parent)
    )
    print(render_problems(problems), file=sys.stderr if problems else sys.stdout)
    return EXIT_INPUT if problems else EXIT_OK


def _repair(run_dir: Path, manifest_arg: Path | None) -> int:
    """``pipeline repair``: restore shots as done from their verified videos; nothing is paid."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} does not exist")
    named = load_state(run_dir / CHECKPOINT).manifest if (run_dir / CHECKPOINT).is_file() else None
    path = Path(named) if named else manifest_arg
    if path is None:
        raise UsageError(f"{run_dir / CHECKPOINT} names no manifest: pass --manifest MANIFEST")
    report = anyio.run(repair, run_dir, load_manifest(path))
    print(
        f"{len(report.restored)} shot(s) restored as done from their videos, "
        f"{len(report.known)} already done in the log, {len(report.skipped)} skipped"
    )
    for name, why in report.skipped:
        print(f"  skipped {name}: {why}")
    print(f"continue with: pipeline resume {run_dir} (only shots without a video are paid for)")
    return EXIT_ATTENTION if report.skipped else EXIT_OK


def _status(run_dir: Path, *, as_json: bool) -> int:
    state = api.status(run_dir)
    if as_json:
        print(json.dumps(status_json(run_dir.name, state), indent=None))
    else:
        print(render_table(state))
    return EXIT_OK if not attention(state) else 1


def _cancel(args: argparse.Namespace) -> int:
    run_dir, shots = args.run_dir, args.shot
    manifest = _trusted(api.manifest_of(run_dir), args)
    options = RunOptions(api_keys=_api_keys(manifest), simulate=args.simulate)
    result = anyio.run(cancel, manifest, run_dir, options, frozenset(shots) if shots else None)
    print(render_table(result.state, [s.id for s in result.shots]))
    return EXIT_OK


def _observer(args: argparse.Namespace) -> Observer:
    if args.verbose:
        return LoggingObserver()
    if args.no_progress or not sys.stderr.isatty():
        return NullObserver()
    return TqdmObserver()


def _api_keys(manifest: Manifest) -> dict[str, str]:
    keys = {}
    for name in {s.provider for s in manifest.shots}:
        env = provider_settings(manifest, name).api_key_env
        if env and os.environ.get(env):
            keys[name] = os.environ[env]
            register(keys[name])  # never printed, logged or written anywhere
    return keys


def _run(manifest: Manifest, run_dir: Path, args: argparse.Namespace) -> int:
    ambiguous = args.resubmit_ambiguous
    options = RunOptions(
        api_keys=_api_keys(manifest),
        retry_failed=args.retry_failed,
        resubmit_ambiguous=frozenset(ambiguous or ["*"]) if ambiguous is not None else frozenset(),
        observer=_observer(args),
        max_usd=args.max_usd,
        only=frozenset(args.shot) if args.shot else None,
        preflight=True,
        wait_s=args.wait,
    )
    result = anyio.run(
        partial(
            api.run,
            manifest,
            run_dir,
            options=options,
            simulate=args.simulate,
            outputs=False,
            announce=_announce,
        )
    )
    _print_result(result, run_dir)
    if (run_dir / CHECKPOINT).exists():
        _outputs(run_dir, manifest, quiet=True)
    return result.exit_code


def _outputs(run_dir: Path, manifest: Manifest, *, quiet: bool = False) -> int:
    """Write the storyboard outputs; a failure here never changes the run's exit code."""
    try:
        written = write_outputs(run_dir, manifest)
    except OSError as exc:
        print(f"could not write the storyboard outputs: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ATTENTION
    names = ", ".join(p.name for p in written)
    print(f"{'outputs' if quiet else 'written'}: {names}")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest, strict=args.strict)
    print_warnings(manifest)
    manifest = _trusted(manifest, args)
    options = RunOptions(api_keys=_api_keys(manifest))

    async def planned() -> Plan:
        if not args.simulate:
            return await make_plan(manifest, args.jobs_dir / manifest.name, options)
        async with sim.running({s.provider for s in manifest.shots}) as sims:
            simulated = replace(
                options,
                simulate=True,
                base_urls={n: r.base_url for n, r in sims.items()},
                api_keys={**options.api_keys, **dict.fromkeys(sims, sim.SIM_KEY)},
            )
            return await make_plan(manifest, args.jobs_dir / manifest.name, simulated)

    plan = anyio.run(planned)
    budget = args.max_usd if args.max_usd is not None else manifest.budget.max_usd
    if args.json:
        print(json.dumps(plan.as_json()))
    else:
        print(render_plan(plan, budget))
    return EXIT_OK


def _announce(urls: Mapping[str, str]) -> None:
    where = ", ".join(f"{name} at {url}" for name, url in sorted(urls.items()))
    print(f"rehearsal (no account, no spend): {where}", file=sys.stderr)


async def _serve_simulators(host: str, port: int, latency: float) -> int:
    config = SimConfig(api_key=sim.SIM_KEY, latency_s=latency)
    async with sim.running(sim.SIMULATORS, config=config, host=host, port=port) as sims:
        print(f"provider simulators (API key: {sim.SIM_KEY}); Ctrl-C stops them")
        hosts = []
        for name, served in sorted(sims.items()):
            print(f"  {name:<11} {served.base_url}")
            hosts.append(served.base_url.split("/")[2])
        print("\nin the shell that runs pipeline:")
        for name, served in sorted(sims.items()):
            spec = PROVIDERS[name].defaults
            print(f"  export {endpoints.env_variable(name)}={served.base_url}")
            print(f"  export {spec.api_key_env}={sim.SIM_KEY}")
        print("\nin the manifest:\nproviders:")
        for name in sorted(sims):
            print(f"  {name}: {{poll_min_s: 0.5}}")
        print(f"downloads: {{allow_hosts: [{', '.join(hosts)}]}}")
        sys.stdout.flush()
        await anyio.sleep_forever()
    return EXIT_OK


def _print_result(result: RunResult, run_dir: Path) -> None:
    order = [s.id for s in result.shots]
    print(render_table(result.state, order))
    print(f"run directory: {run_dir}")
    if result.exit_code == EXIT_INTERRUPTED:
        print(f"interrupted; continue with: pipeline resume {run_dir}")
    for rec in attention(result.state):
        if rec.state.value == "needs_reconcile":
            print(
                f"{rec.id}: the submit may have been charged; check the provider's dashboard: "
                f"`pipeline adopt {run_dir} {rec.id} JOB_ID` if the job exists, else "
                f"`pipeline resume {run_dir} --resubmit-ambiguous --shot {rec.id}` to pay again"
            )
    spend = result.spend
    if spend.limit_usd is not None or spend.committed_usd:
        limit = f" of ${spend.limit_usd:.2f}" if spend.limit_usd is not None else ""
        print(f"spend: ${spend.committed_usd:.2f}{limit} committed (ambiguous submits included)")
    held, more = spend.shortfall()
    if held:
        need = f"${more:.2f} more" if more is not None else "more (some prices are unknown)"
        print(f"{held} shot(s) held back by the budget: {need} would finish the batch")
