"""The commands that read a run of the distributed mode's store (PostgreSQL).

They are ``status``, ``plan``, ``storyboard``, ``export``, ``review`` with ``--store URL RUN``,
and ``pull``.

The store is ``--store URL`` or, when the flag is absent, the variable ``PIPELINE_STORE``
(read here: only the CLI reads the environment). With the variable set and no flag, a
positional that names an existing directory (or a path with a ``/``) is still a local run
directory, so the embedded mode's commands keep working; ``plan`` uses the variable only
with ``--run``.

``status`` folds the run's rows with the fold every local command uses and prints the same
table or JSON, plus the account queues of the run's providers (in flight / queued, all runs
together) when DBOS's tables are there. ``storyboard``, ``export`` and ``review`` pull the run
into a local run directory first (``--into DIR``, default ``jobs/RUN``) and then do what they do
for a local run; ``review`` pulls once more when it ends, which shares its verdicts through the
store. This module imports psycopg (through :mod:`pipeline.journal.pgjournal`) only when a
store is used: ``main`` imports it for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_ATTENTION, EXIT_OK, ManifestError, UsageError

if TYPE_CHECKING:
    from pipeline.journal.pgjournal import PgJournal
    from pipeline.journal.state import RunState
    from pipeline.outputs.pull import PullResult
    from pipeline.settings import StorageSettings

STORE_VARIABLE = "PIPELINE_STORE"
_READERS = frozenset({"status", "storyboard", "export", "review"})


def store_of(args: argparse.Namespace) -> str | None:
    """The store URL this command reads, or None for the embedded mode (a local run)."""
    if args.command not in _READERS | {"plan", "pull"}:
        return None
    flag: str | None = getattr(args, "store", None)
    if flag is not None:
        return flag
    env = os.environ.get(STORE_VARIABLE) or None
    if env is None or args.command == "pull":
        return env
    if args.command == "plan":
        return env if getattr(args, "run", None) else None
    local = Path(args.run_dir)
    return None if local.is_dir() or len(local.parts) > 1 else env


def wanted(args: argparse.Namespace) -> bool:
    """Whether ``args`` is a command of this module (``pull``, or a reader with a store)."""
    return args.command == "pull" or store_of(args) is not None


def command(args: argparse.Namespace) -> int:
    """Run ``args.command`` against the store; returns the exit code.

    Raises:
        UsageError: no store given to ``pull``, a bad run id or URL, an unknown run (exit 2).
        StoreError / StoreDamaged / LockedError / ManifestError: as the commands document.
    """
    from pipeline.journal.pgjournal import PgJournal

    dsn = store_of(args)
    if dsn is None:
        raise UsageError(f"pull: name the store with --store URL or {STORE_VARIABLE}")
    with PgJournal(dsn) as journal:
        if args.command == "status":
            return _status(journal, str(args.run_dir), as_json=args.json)
        if args.command == "plan":
            return _plan(journal, args)
        if args.command == "pull":
            return _pull(journal, args.run, args.output, args.trust_endpoints)
        run = str(args.run_dir)
        into = args.into if args.into is not None else Path("jobs") / run
        code = _pull(journal, run, into, args.trust_endpoints)
        if args.command == "storyboard":
            return code
        args.run_dir = into
        if args.command == "review":
            from pipeline.cli import commands

            try:
                return commands.command(args)
            finally:  # the verdicts given in the review go to the store
                _pull(journal, run, into, args.trust_endpoints, quiet=True)
        from pipeline.cli import commands

        return max(code, commands.command(args))


def queue_counts(journal: PgJournal, state: RunState) -> list[dict[str, Any]]:
    """The account queues of the run's providers: ``[{"queue", "in_flight", "queued"}]``.

    ``queue`` is ``<provider>.<account>``; the counts are of every run on that account (DBOS's
    ``workflow_status``); empty when the store has no DBOS tables.
    """
    from pipeline.distributed.queues import counts

    providers = {rec.provider for rec in state.shots.values() if rec.provider}
    with journal.connect() as conn:
        found = counts(conn)
    return [
        {"queue": name, "in_flight": c.in_flight, "queued": c.queued}
        for name, c in sorted(found.items())
        if name.split(".", 1)[0] in providers
    ]


def _status(journal: PgJournal, run: str, *, as_json: bool) -> int:
    from pipeline.journal.pgconn import check_run_id
    from pipeline.outputs.summary import attention, render_table, status_json

    state = journal.state(check_run_id(run))
    queues = queue_counts(journal, state)
    if as_json:
        doc = status_json(run, state)
        doc["store"] = journal.name
        doc["queues"] = queues
        print(json.dumps(doc, indent=None))
    else:
        print(render_table(state))
        for q in queues:
            print(f"queue {q['queue']}: {q['in_flight']} in flight, {q['queued']} queued")
    return EXIT_OK if not attention(state) else EXIT_ATTENTION


def storage_for(journal: PgJournal, run: str, *, trust: bool) -> StorageSettings | None:
    """The stored manifest's ``storage``, its endpoint decided as for a run (yours wins).

    The manifest's ``storage.endpoint_url`` is used only when it equals yours
    (``PIPELINE_STORAGE_ENDPOINT_URL`` or the config file's ``[storage]``) or with
    ``--trust-endpoints``; otherwise yours is used, and with none of yours the pull stops.

    Raises:
        UsageError: the manifest's endpoint is not confirmed and you have none.
    """
    from pipeline.cli.userconfig import load_user_config
    from pipeline.outputs.pull import storage_of

    storage = storage_of(journal.require(run).manifest_text, run)
    if storage is None:
        return None
    mine = load_user_config(os.environ).storage.endpoint_url
    asked = storage.endpoint_url
    same = asked is not None and mine is not None and asked.rstrip("/") == mine.rstrip("/")
    if asked is None or trust or same:
        endpoint = asked if asked is not None and (trust or same) else mine
        return storage.model_copy(update={"endpoint_url": endpoint})
    raise UsageError(
        f"run {run}: its manifest asks for the object storage endpoint {asked}, which is not "
        f"yours; confirm it with --trust-endpoints, or set PIPELINE_STORAGE_ENDPOINT_URL"
    )


def _pull(
    journal: PgJournal, run: str, dest: Path | None, trust: bool, *, quiet: bool = False
) -> int:
    from pipeline.journal.pgconn import check_run_id
    from pipeline.outputs.pull import pull

    check_run_id(run)
    where = dest if dest is not None else Path("jobs") / run
    result = pull(journal, run, where, storage=storage_for(journal, run, trust=trust))
    if not quiet:
        _report(result)
    built = _outputs(result, quiet=quiet)
    return EXIT_ATTENTION if result.problems or not built else EXIT_OK


def _report(result: PullResult) -> None:
    print(
        f"pulled into {result.run_dir}: {result.records} record(s) ({result.new} new), "
        f"{len(result.downloaded)} video(s) downloaded, {result.kept} already here"
        + (f", {result.pushed} local verdict(s) sent to the store" if result.pushed else "")
    )
    if result.rerolls:
        print(
            f"re-roll(s) sent to the store: {', '.join(result.rerolls)}; "
            "`pipeline run MANIFEST --store URL` with the run's manifest submits them"
        )
    for what, why in result.problems:
        print(f"  {what}: {why}", file=sys.stderr)


def _outputs(result: PullResult, *, quiet: bool) -> bool:
    """Build the storyboard outputs in the pulled directory; False when they could not be."""
    from pipeline._util.redaction import redact
    from pipeline.manifest.loader import load_manifest
    from pipeline.outputs.pull import MANIFEST_FILE
    from pipeline.outputs.write import write_outputs

    try:
        written = write_outputs(result.run_dir, load_manifest(result.run_dir / MANIFEST_FILE))
    except ManifestError as exc:
        print(
            f"outputs not built: the run's manifest does not load here (put its media beside "
            f"{result.run_dir / MANIFEST_FILE}, then `pipeline storyboard {result.run_dir}`):\n"
            f"{redact(str(exc))}",
            file=sys.stderr,
        )
        return False
    except OSError as exc:
        print(f"could not write the storyboard outputs: {redact(str(exc))}", file=sys.stderr)
        return False
    if not quiet:
        print(f"written: {', '.join(p.name for p in written)}")
    return True


def _plan(journal: PgJournal, args: argparse.Namespace) -> int:
    """``plan MANIFEST --store URL [--run RUN]``: the manifest against the store's run."""
    from pipeline.cli import commands
    from pipeline.manifest.loader import load_manifest
    from pipeline.outputs.pull import PullResult, write_checkpoint

    name = load_manifest(args.manifest, strict=args.strict).name
    run = args.run
    if run is None:
        mine = [r.run_id for r in journal.runs() if r.manifest_name == name]
        run = mine[-1] if mine else None
    import tempfile  # imports shutil, bz2, lzma: only here, not for every command

    with tempfile.TemporaryDirectory(prefix="pipeline-plan-") as tmp:
        jobs = Path(tmp)
        if run is not None:
            journal.require(run)
            (jobs / name).mkdir()
            write_checkpoint(journal, run, jobs / name, PullResult(jobs / name))
        args.jobs_dir = jobs
        said = f"compared with run {run} of {journal.name}" if run else "no run of it in the store"
        print(said, file=sys.stderr)
        return commands.command(args)
