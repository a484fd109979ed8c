"""The command line's grammar: every command, flag and help text (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import __version__

TRUST_HELP = (
    "obey the provider endpoints, key variables and storage endpoint this manifest sets "
    "(by default only your config file and PIPELINE_* variables choose them)"
)


STRICT_HELP = "refuse models the built-in table and the cached catalog do not know"


EPILOG = """\
exit codes:
  0    every shot done (or cancelled on purpose)    1    some shots failed or need attention
  2    invalid input; nothing was sent (manifest, flags, run directory, unreachable provider)
  3    checkpoint or disk fail-stop      4    another runner holds the run directory
  130  interrupted (continue with `pipeline resume RUN_DIR`)

environment:
  VENICE_API_KEY, SEEDANCE2_API_KEY, NEWAPI_API_KEY, RELAYDANCE_API_KEY
       provider keys (names can be changed with api_key_env in your config); never logged
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or the store's own variables)
       object storage credentials, when the manifest has `storage` (an instance role is used
       only when AWS_METADATA_ENDPOINT is set: the metadata service is never probed otherwise)
  PIPELINE_CONFIG  your config file (default ~/.config/pipeline/config.toml): provider
       base_url and api_key_env, storage endpoint_url; a manifest's own are obeyed only
       with --trust-endpoints or when they match yours
  PIPELINE_<PROVIDER>_BASE_URL, PIPELINE_STORAGE_ENDPOINT_URL   the same, per variable
  XDG_CACHE_HOME   where `pipeline models --refresh` caches model catalogs (~/.cache)

examples:
  pipeline run samples/storyboard.yaml          # offline previs clips, no account needed
  pipeline run my.yaml --simulate --jobs-dir /tmp/rehearsal   # rehearse: no account, no spend
"""


def take_number(text: str) -> int:
    """A take as the user writes it (``1``, ``t1``, ``T1``) -> its number (1-based).

    Raises:
        argparse.ArgumentTypeError: anything else (argparse then exits 2 with the message).
    """
    digits = text[1:] if text[:1] in ("t", "T") else text
    if not digits.isascii() or not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a take: write 1, t1 or T1")
    return int(digits)


STORE_HELP = (
    "read the run RUN from this PostgreSQL store of the distributed mode "
    "(postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; default: $PIPELINE_STORE)"
)


def store_flags(p: argparse.ArgumentParser, *, into: bool = False) -> None:
    """Add ``--store URL`` (with ``into``: ``--into DIR`` and ``--trust-endpoints`` too).

    With ``--store`` the positional run is a run id of the store; ``--into`` is the local run
    directory it is pulled into.
    """
    p.add_argument("--store", metavar="URL", help=STORE_HELP)
    if into:
        p.add_argument(
            "--into",
            type=Path,
            metavar="DIR",
            help="with --store: the local run directory the run is pulled into (default jobs/RUN)",
        )
        p.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The ``pipeline`` parser: one subcommand per command, with their flags and help."""
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch runner for AI video generation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("-v", "--verbose", action="store_true", help="log every transition")
        p.add_argument(
            "--retry-failed",
            action="store_true",
            help="new attempt for failed shots (and for cancelled ones named with --shot)",
        )
        p.add_argument(
            "--simulate",
            action="store_true",
            help="rehearse against in-process simulators of the providers: no account, no spend",
        )
        p.add_argument(
            "--resubmit-ambiguous",
            nargs="*",
            metavar="SHOT",
            help="allow paying again for shots whose submit outcome is unknown (all, or the "
            "named shots); check the provider's dashboard first",
        )
        p.add_argument(
            "--shot",
            action="append",
            metavar="ID",
            help="limit --retry-failed / --resubmit-ambiguous to this shot (repeat)",
        )
        p.add_argument(
            "--max-usd", type=float, metavar="USD", help="spend limit (overrides budget.max_usd)"
        )
        p.add_argument("--strict", action="store_true", help=STRICT_HELP)
        p.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)
        p.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait up to SECONDS for providers or storage that do not answer at start "
            "(default: stop at once, exit 2)",
        )

    p_run = sub.add_parser("run", help="run (or continue) a manifest")
    p_run.add_argument("manifest", type=Path)
    p_run.add_argument("--jobs-dir", type=Path, default=Path("jobs"), help="default: ./jobs")
    run_flags(p_run)
    p_run.add_argument(
        "--store",
        metavar="URL",
        help="distributed mode: start or join the run in this PostgreSQL store and work on it "
        "(postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; default: $PIPELINE_STORE; docs/scale.md)",
    )
    p_run.add_argument(
        "--no-work", action="store_true", help="with --store: enqueue the shots and leave"
    )

    p_resume = sub.add_parser("resume", help="continue an interrupted run")
    p_resume.add_argument("run_dir", type=Path)
    run_flags(p_resume)

    p_status = sub.add_parser("status", help="show where every shot stands")
    p_status.add_argument("run_dir", type=Path, metavar="RUN_DIR|RUN")
    p_status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    store_flags(p_status)

    p_val = sub.add_parser("validate", help="check a manifest offline")
    p_val.add_argument("manifest", type=Path)
    p_val.add_argument("--strict", action="store_true", help=STRICT_HELP)
    p_val.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)
    p_val.add_argument(
        "--preflight",
        action="store_true",
        help="also check, with free calls, that each provider and the object storage answer "
        "and accept their keys (what run and resume check before the first paid call)",
    )

    p_cancel = sub.add_parser("cancel", help="cancel unfinished shots (at the provider too)")
    p_cancel.add_argument("run_dir", type=Path)
    p_cancel.add_argument("--shot", action="append", metavar="ID", help="only this shot (repeat)")
    p_cancel.add_argument(
        "--simulate", action="store_true", help="the run is a --simulate rehearsal"
    )
    p_cancel.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)

    p_adopt = sub.add_parser(
        "adopt", help="attach a job found on the provider's dashboard to a shot, then resume"
    )
    p_adopt.add_argument("run_dir", type=Path)
    p_adopt.add_argument("shot", metavar="SHOT")
    p_adopt.add_argument("job_id", metavar="JOB_ID")
    run_flags(p_adopt)

    p_repair = sub.add_parser(
        "repair", help="rebuild a truncated or lost checkpoint from the verified videos"
    )
    p_repair.add_argument("run_dir", type=Path)
    p_repair.add_argument(
        "--manifest", type=Path, help="the run's manifest (required when the log names none)"
    )

    p_plan = sub.add_parser("plan", help="what a run would do and cost; nothing is spent")
    p_plan.add_argument("manifest", type=Path)
    p_plan.add_argument("--jobs-dir", type=Path, default=Path("jobs"), help="default: ./jobs")
    p_plan.add_argument("--simulate", action="store_true", help="quote from the simulators")
    p_plan.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)
    p_plan.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p_plan.add_argument("--max-usd", type=float, metavar="USD", help="compare with this budget")
    p_plan.add_argument("--strict", action="store_true", help=STRICT_HELP)
    store_flags(p_plan)
    p_plan.add_argument(
        "--run",
        metavar="RUN",
        help="with --store: the run to compare with (default: the newest "
        "run of the manifest's name)",
    )

    p_pick = sub.add_parser("pick", help="choose the take the animatic and storyboard use")
    p_pick.add_argument("run_dir", type=Path)
    p_pick.add_argument("shot", metavar="SHOT", help="<scene>-<shot>, e.g. dawn-s02")
    p_pick.add_argument("take", type=take_number, metavar="TAKE", help="1, t1 or T1")

    p_board = sub.add_parser("storyboard", help="rebuild the page, sheet, animatic and report")
    p_board.add_argument("run_dir", type=Path, metavar="RUN_DIR|RUN")
    store_flags(p_board, into=True)

    p_export = sub.add_parser(
        "export", help="the cut as a timeline for an editor (OTIO, EDL, FCP 7 XML, FCPXML)"
    )
    p_export.add_argument("run_dir", type=Path, metavar="RUN_DIR|RUN")
    store_flags(p_export, into=True)
    p_export.add_argument(
        "--format",
        required=True,
        choices=["otio", "edl", "fcp7xml", "fcpxml"],
        help="otio: OpenTimelineIO; edl: CMX 3600 (chosen takes only); fcp7xml: Final Cut Pro "
        "7 XML (Premiere, Resolve); fcpxml: Final Cut Pro",
    )
    p_export.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="default: RUN_DIR/timeline.otio, .edl, .xml (fcp7xml) or .fcpxml",
    )

    p_models = sub.add_parser("models", help="list a provider's models and what each accepts")
    p_models.add_argument("provider", metavar="PROVIDER", help="venice, seedance2, newapi...")
    p_models.add_argument("--refresh", action="store_true", help="fetch the provider's list")
    p_models.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p_models.add_argument("--base-url", metavar="URL", help="with --refresh: the API's base URL")
    p_models.add_argument(
        "--simulate", action="store_true", help="with --refresh: fetch from the simulator"
    )

    p_pull = sub.add_parser(
        "pull", help="copy a run of the store (records, manifest, videos) into a run directory"
    )
    p_pull.add_argument("run", metavar="RUN", help="the run id `pipeline run --store` printed")
    p_pull.add_argument("--store", metavar="URL", help=STORE_HELP)
    p_pull.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="the run directory (default jobs/RUN)"
    )
    p_pull.add_argument("--trust-endpoints", action="store_true", help=TRUST_HELP)

    p_worker = sub.add_parser(
        "worker", help="distributed mode: execute queued shots of any run until Ctrl-C"
    )
    p_worker.add_argument(
        "--store", metavar="URL", help="the PostgreSQL store (default: $PIPELINE_STORE)"
    )
    p_worker.add_argument(
        "--providers", metavar="A,B", help="only these providers' shots (default: all)"
    )
    p_worker.add_argument("-v", "--verbose", action="store_true", help="log every transition")

    p_sim = sub.add_parser("sim", help="serve the provider simulators (until Ctrl-C)")
    p_sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p_sim.add_argument("--port", type=int, default=0, help="first port (default: free ports)")
    p_sim.add_argument("--latency", type=float, default=5.0, help="seconds per job (default 5)")

    p_review = sub.add_parser(
        "review", help="review a run in the browser: takes side by side, picks, notes, re-rolls"
    )
    p_review.add_argument("run_dir", type=Path, metavar="RUN_DIR|RUN")
    store_flags(p_review, into=True)
    p_review.add_argument(
        "--host",
        help="address to bind (default 127.0.0.1; another address only when named here)",
    )
    p_review.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: free)")
    p_review.add_argument("--open", action="store_true", help="open the page in the browser")
    return parser
