"""Shared pieces of the reliability tests (README "Reliability", R1-R19): manifests, sim options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import sim
from pipeline.engine.options import RunOptions, RunResult
from pipeline.engine.runner import execute
from pipeline.manifest.loader import Manifest, load_manifest
from pipeline.sim import RunningSim

FAST_POLLING = {"poll_min_s": 0.05, "poll_max_s": 0.2}


def manifest(
    tmp_path: Path,
    provider: str,
    shots: int,
    *,
    name: str = "rel",
    settings: str = "",
    prompt: str = "shot",
    duration: int = 5,
) -> Path:
    """A manifest of ``shots`` text-to-video shots on ``provider`` (ids ``a-s00``...)."""
    lines = [
        "version: 1",
        f"name: {name}",
        f"defaults: {{provider: {provider}, duration: {duration}}}",
    ]
    if settings:
        lines += ["providers:", f"  {provider}: {{{settings}}}"]
    lines += ["scenes:", "  - id: a", "    shots:"]
    lines += [f"      - {{id: s{i:02d}, prompt: '{prompt} {i}'}}" for i in range(shots)]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def options_for(
    sims: Mapping[str, RunningSim], overrides: Mapping[str, Any] | None = None, **kw: Any
) -> RunOptions:
    """Run options pointing every adapter at its simulator (as ``--simulate`` does)."""
    settings = {**FAST_POLLING, **(overrides or {})}
    return RunOptions(
        simulate=True,
        base_urls={n: r.base_url for n, r in sims.items()},
        api_keys=dict.fromkeys(sims, sim.SIM_KEY),
        overrides={n: settings for n in sims},
        **kw,
    )


async def run(path: Path, options: RunOptions) -> tuple[Manifest, RunResult]:
    """Load ``path`` and run it in ``tmp/jobs/<name>``."""
    m = load_manifest(path)
    return m, await execute(m, path.parent / "jobs" / m.name, options)
