"""pipeline: an asyncio batch runner for AI video generation.

A YAML manifest of shots goes in; verified MP4 files come out under ``jobs/<name>/shots/``. Every
shot moves through upload -> submit -> poll -> fetch, and every transition is checkpointed so an
interrupted batch resumes without paying for any shot twice.

The library face (:mod:`pipeline.api`)::

    import pipeline

    manifest = pipeline.load_manifest("samples/storyboard.yaml")
    result = await pipeline.run(manifest)              # a RunResult; jobs/<name>/ by default
    state = pipeline.status("jobs/storyboard")          # a RunState

Names are imported on first use, so ``import pipeline`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "load_manifest": "pipeline.manifest.loader",
    "Manifest": "pipeline.manifest.loader",
    "run": "pipeline.api",
    "resume": "pipeline.api",
    "status": "pipeline.api",
    "RunOptions": "pipeline.engine.options",
    "RunResult": "pipeline.engine.options",
    "RunState": "pipeline.journal.state",
    "Shot": "pipeline.models",
    "ShotState": "pipeline.models",
    "PipelineError": "pipeline.errors",
    "ManifestError": "pipeline.errors",
    "UsageError": "pipeline.errors",
    "CheckpointError": "pipeline.errors",
    "LockedError": "pipeline.errors",
    "ProviderError": "pipeline.errors",
}

__all__ = [
    "CheckpointError",
    "LockedError",
    "Manifest",
    "ManifestError",
    "PipelineError",
    "ProviderError",
    "RunOptions",
    "RunResult",
    "RunState",
    "Shot",
    "ShotState",
    "UsageError",
    "__version__",
    "load_manifest",
    "resume",
    "run",
    "status",
]

if TYPE_CHECKING:
    from pipeline.api import resume, run, status
    from pipeline.engine.options import RunOptions, RunResult
    from pipeline.errors import (
        CheckpointError,
        LockedError,
        ManifestError,
        PipelineError,
        ProviderError,
        UsageError,
    )
    from pipeline.journal.state import RunState
    from pipeline.manifest.loader import Manifest, load_manifest
    from pipeline.models import Shot, ShotState


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
