"""What every shot's stage machine in a run shares: the journal appender, gates, settings, paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio

from pipeline.engine import pollsched
from pipeline.engine.budget import Spend
from pipeline.engine.limits import ProviderGate
from pipeline.engine.options import RunOptions
from pipeline.engine.progress import Observer
from pipeline.journal.checkpoint import Record
from pipeline.models import (
    Event,
    MediaRef,
)
from pipeline.providers.base import (
    MediaPolicy,
    Provider,
)
from pipeline.settings import DownloadSettings, ProviderSettings
from pipeline.transfer import upload


class Appender(Protocol):
    """Awaitable checkpoint append (the runner's, which also keeps the live record list)."""

    def __call__(
        self,
        ev: Event,
        shot: str | None,
        /,
        *,
        then: Callable[[], None] | None = None,
        **fields: Any,
    ) -> Awaitable[Record]:
        """Append one event; durable events are fsynced before this returns.

        ``then`` runs in the writer thread once the record is durable (see
        :meth:`pipeline.journal.checkpoint.Checkpoint.append`).
        """
        ...


@dataclass
class RunContext:
    """Everything the shot machines of one run share.

    Attributes:
        run_id: the run's id (its ``run_started`` record).
        run_dir: the run directory; videos go to ``shots/``.
        append: writes one journal record (durable ones fsynced before it returns).
        providers: the adapters by provider name, open for the run.
        gates: per-provider concurrency, rate limits, shared pause and breaker.
        settings: per-provider settings, the manifest's merged over the adapter's defaults.
        downloads: result download policy.
        observer: progress display.
        options: how the run was asked for (flags, keys, budget).
        media: resolves a shot's media to URLs its provider can use, each file once.
        spend: the spend guard.
        policies: how local media reach each provider.
        history: completion times per provider and model, which poll schedules learn from.
    """

    run_id: str
    run_dir: Path
    append: Appender
    providers: Mapping[str, Provider]
    gates: Mapping[str, ProviderGate]
    settings: Mapping[str, ProviderSettings]
    downloads: DownloadSettings
    observer: Observer
    options: RunOptions
    media: upload.MediaResolver = field(default_factory=upload.MediaResolver)
    spend: Spend = field(default_factory=Spend)
    policies: Mapping[str, MediaPolicy] = field(default_factory=dict)
    media_cache: dict[tuple[str, str, str], MediaRef] = field(default_factory=dict)
    history: pollsched.History = field(default_factory=pollsched.History)
    media_locks: dict[tuple[str, str, str], anyio.Lock] = field(default_factory=dict)
    _features: dict[tuple[str, type], bool] = field(default_factory=dict)

    def supports(self, provider: str, feature: type) -> bool:
        """Whether ``provider``'s adapter implements the optional protocol ``feature``.

        The same as ``isinstance(adapter, feature)``, remembered per run: a runtime protocol
        check walks the protocol's members (~10 µs), and every shot asks.
        """
        key = (provider, feature)
        known = self._features.get(key)
        if known is None:
            known = self._features[key] = isinstance(self.providers[provider], feature)
        return known


def output_path(run_dir: Path, shot_id: str) -> Path:
    """``RUN_DIR/shots/<shot id>.mp4``; refuses an id that would leave the directory."""
    shots = run_dir / "shots"
    path = shots / f"{shot_id}.mp4"
    if path.parent != shots or shot_id in {"", ".", ".."} or "/" in shot_id or "\0" in shot_id:
        raise ValueError(f"unsafe shot id for a file name: {shot_id!r}")
    return path
