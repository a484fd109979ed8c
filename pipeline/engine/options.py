"""How a run is asked for and what it returns: options, result, exit codes, provider settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engine.budget import Spend
from pipeline.engine.progress import NullObserver, Observer

# Re-exported: the engine's callers read the exit codes here; they are defined in errors.
from pipeline.errors import EXIT_ATTENTION as EXIT_ATTENTION
from pipeline.errors import EXIT_CHECKPOINT as EXIT_CHECKPOINT
from pipeline.errors import EXIT_INPUT as EXIT_INPUT
from pipeline.errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from pipeline.errors import EXIT_LOCKED as EXIT_LOCKED
from pipeline.errors import EXIT_OK as EXIT_OK
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot
from pipeline.providers import PROVIDERS
from pipeline.providers.base import ProviderSpec
from pipeline.settings import ProviderSettings

if TYPE_CHECKING:  # obstore is loaded by the runs that upload, not by every import
    from pipeline.transfer.storage import StoreAccess

#: How often ``--wait`` checks again for providers or storage unreachable at start (s).
PREFLIGHT_RETRY_S = 15.0


@dataclass(frozen=True)
class RunOptions:
    """How to run.

    Attributes:
        api_keys: provider name -> API key (read from the environment by the CLI only).
        base_urls: provider name -> base URL override (``--simulate`` points these at the sims).
        simulate: talking to the in-process simulators (loopback result URLs allowed).
        retry_failed: give failed shots a new attempt.
        resubmit_ambiguous: shot ids (or ``{"*"}``) whose ambiguous submit may be paid again.
        observer: progress display.
        registry: provider specs by name (tests inject fakes; default: the built-in registry).
        overrides: provider name -> settings that win over the manifest (``--simulate`` uses
            short poll intervals against the simulators).
        max_usd: spend limit overriding the manifest's ``budget.max_usd`` (``--max-usd``).
        only: when set, ``retry_failed`` and ``resubmit_ambiguous`` apply to these shots only.
        preflight: check before the first paid call that every provider and the object
            storage answer and accept their credentials (:mod:`pipeline.engine.preflight`); the CLI
            always does, tests that inject fake providers need not.
        history_path: the file of completion times kept across runs, which the poll schedule
            learns from (``engine.pollsched``; the CLI uses the user's cache); None: the
            run's own only.
        wait_s: how long to wait for providers or storage that cannot be reached at start
            (``--wait``), checking again every :data:`PREFLIGHT_RETRY_S`; 0 stops at once.
        storage_access: object storage to use instead of the manifest's endpoint and the
            environment's credentials (``--simulate``: the in-process simulated store); its
            presigned URLs end with the process, so URLs an earlier run recorded are not reused.
    """

    api_keys: Mapping[str, str] = field(default_factory=dict)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    simulate: bool = False
    retry_failed: bool = False
    resubmit_ambiguous: frozenset[str] = frozenset()
    observer: Observer = field(default_factory=NullObserver)
    registry: Mapping[str, ProviderSpec] = field(default_factory=lambda: PROVIDERS)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_usd: float | None = None
    only: frozenset[str] | None = None
    preflight: bool = False
    wait_s: float = 0.0
    history_path: Path | None = None
    storage_access: StoreAccess | None = None


@dataclass
class RunResult:
    """Outcome of :func:`execute`: the final replayed state, the spend and the exit code."""

    state: RunState
    shots: tuple[Shot, ...]
    interrupted: bool = False
    exit_code: int = EXIT_OK
    orphans: tuple[str, ...] = ()
    spend: Spend = field(default_factory=Spend)


def provider_settings(
    manifest: Manifest,
    name: str,
    base_url: str | None = None,
    registry: Mapping[str, ProviderSpec] = PROVIDERS,
    overrides: Mapping[str, Any] | None = None,
) -> ProviderSettings:
    """Manifest settings for ``name`` merged over the adapter's defaults, then the overrides."""
    spec = registry[name]
    merged = manifest.providers.get(name, ProviderSettings()).merged(spec.defaults)
    update = dict(overrides or {})
    if base_url:
        update["base_url"] = base_url
    return merged.model_copy(update=update) if update else merged
