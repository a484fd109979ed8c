"""Every command but ``status``, ``validate`` and ``models``: the ones that need the engine.

``run``, ``resume``, ``adopt``, ``cancel``, ``repair``, ``plan``, ``pick``, ``storyboard``,
``export``, ``review`` and ``sim`` load the manifest loader, the adapters, the simulators and
the outputs (aiohttp, PyAV, Pillow...), so :mod:`pipeline.cli.main` imports this module only
when one of them runs: ``status`` and ``validate`` start without it. ``validate --preflight`` uses
:func:`check_preflight`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from pipeline import api
from pipeline._util.redaction import redact, register
from pipeline.cli import endpoints, userconfig
from pipeline.engine import pollsched
from pipeline.engine.actions import adopt, cancel
from pipeline.engine.options import (
    EXIT_ATTENTION,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunOptions,
    RunResult,
    provider_settings,
)
from pipeline.engine.plan import Plan, make_plan, render_plan
from pipeline.engine.preflight import preflight, render_problems
from pipeline.engine.progress import LoggingObserver, NullObserver, Observer, TqdmObserver
from pipeline.engine.repair import repair
from pipeline.errors import UsageError
from pipeline.journal import inbox
from pipeline.journal.checkpoint import FILE as CHECKPOINT
from pipeline.journal.snapshot import load_state
from pipeline.manifest.loader import Manifest, load_manifest, print_warnings
from pipeline.manifest.takes import resolver, with_rerolls
from pipeline.outputs.summary import attention, render_table
from pipeline.providers import PROVIDERS


def command(args: argparse.Namespace) -> int:
    """Run ``args.command`` (any command but ``status``, ``validate`` and ``models``).

    Returns:
        The exit code; the expected failures raise (:func:`pipeline.cli.main.main` maps them).
    """
    if args.command == "cancel":
        return _cancel(args)
    if args.command == "sim":
        return anyio.run(_serve_simulators, args.host, args.port, args.latency)
    if args.command == "plan":
        return _plan(args)
    if args.command == "pick":
        return _pick(args.run_dir, args.shot, args.take)
    if args.command == "review":
        return _review(args)
    if args.command == "storyboard":
        return _outputs(args.run_dir, api.manifest_of(args.run_dir))
    if args.command == "export":
        return _export(args.run_dir, args.format, args.output)
    if args.command == "repair":
        return _repair(args.run_dir, args.manifest)
    if args.command == "adopt":
        manifest = endpoints.for_command(api.manifest_of(args.run_dir), args)
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
        manifest = endpoints.for_command(api.manifest_of(args.run_dir), args)
        return _run(manifest, args.run_dir, args)
    manifest = load_manifest(args.manifest, strict=args.strict)
    print_warnings(manifest)
    return _run(endpoints.for_command(manifest, args), args.jobs_dir / manifest.name, args)


def check_preflight(manifest: Manifest) -> int:
    """``pipeline validate --preflight``: the free calls a run makes before its first paid one.

    Returns:
        0, or 2 when a provider or the object storage does not answer or refuses its key (every
        problem printed on stderr).
    """
    problems = anyio.run(
        partial(preflight, manifest, api_keys=_api_keys(manifest), run_dir=manifest.path.parent)
    )
    print(render_problems(problems), file=sys.stderr if problems else sys.stdout)
    return EXIT_INPUT if problems else EXIT_OK


def _pick(run_dir: Path, shot: str, take: int) -> int:
    """``pipeline pick``: a ``take_picked`` record (queued when a runner holds the run)."""
    base = api.manifest_of(run_dir)
    from pipeline.outputs.picks import pick_request, set_pick

    manifest = with_rerolls(base, api.status(run_dir))
    request = pick_request(manifest, shot, take)
    set_pick(run_dir, manifest, shot, take)
    recorded, _ = anyio.run(inbox.record, run_dir, [request], resolver(base))
    print(f"{shot}: take {take} chosen" + ("" if recorded else " (queued for the running runner)"))
    return _outputs(run_dir, base)


def _review(args: argparse.Namespace) -> int:
    """``pipeline review``: serve the review app until Ctrl-C."""
    from pipeline.review.app import serve

    manifest = api.manifest_of(args.run_dir)
    host = args.host if args.host is not None else "127.0.0.1"
    anyio.run(
        partial(
            serve,
            args.run_dir,
            manifest,
            host=host,
            port=args.port,
            explicit_host=args.host is not None,
            open_browser=args.open,
        )
    )
    return EXIT_OK


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


def _export(run_dir: Path, fmt: str, output: Path | None) -> int:
    """``pipeline export``: the run's timeline for an editor (OpenTimelineIO loads only here)."""
    from pipeline.outputs.timeline_export import default_path, export_timeline

    manifest = api.manifest_of(run_dir)
    dest = output if output is not None else default_path(run_dir, fmt)
    try:
        export_timeline(run_dir, manifest, fmt, dest)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    print(f"written: {dest}")
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    run_dir, shots = args.run_dir, args.shot
    manifest = endpoints.for_command(api.manifest_of(run_dir), args)
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
        history_path=pollsched.default_path(),  # the poll schedule learns across runs
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
    from pipeline.outputs.write import write_outputs  # PyAV, Pillow, Jinja2, OTIO: not before

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
    manifest = endpoints.for_command(manifest, args)
    options = RunOptions(api_keys=_api_keys(manifest))

    async def planned() -> Plan:
        if not args.simulate:
            return await make_plan(manifest, args.jobs_dir / manifest.name, options)
        from pipeline import sim

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
    from pipeline import sim
    from pipeline.sim.common import SimConfig

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
            print(f"  export {userconfig.env_variable(name)}={served.base_url}")
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
