"""A finished run of the offline ``local`` provider, for the outputs' tests (animatic, cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
from PIL import Image

from pipeline.engine.options import RunOptions
from pipeline.engine.runner import execute
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.state import RunState, replay
from pipeline.manifest.loader import Manifest, load_manifest


def two_shot_manifest(name: str) -> str:
    """A manifest named ``name``: scene ``one``, shot ``a`` (first frame ``pier.png``) and shot
    ``b`` in two takes, on the offline ``local`` provider (for :func:`finished_run`)."""
    return f"""\
version: 1
name: {name}
defaults: {{provider: local, duration: 1, aspect_ratio: "16:9"}}
providers: {{local: {{latency_s: 0}}}}
scenes:
  - id: one
    shots:
      - {{id: a, prompt: "Wide: the pier at dawn", image: pier.png}}
      - {{id: b, prompt: "The lighthouse", takes: 2, seed: 5}}
"""


@dataclasses.dataclass
class Run:
    """A run directory, its manifest (as it stands after the run) and its replayed state."""

    run_dir: Path
    manifest: Manifest
    state: RunState


def finished_run(root: Path, manifest: str, name: str, *, then: str | None = None) -> Run:
    """Run ``manifest`` (YAML text naming run ``name``) in ``root``, with ``pier.png`` beside it.

    ``pier.png`` is 320 x 180: blue with an amber block. ``then``, when given, replaces the
    manifest's text after the run (e.g. a shot added that never ran).
    """
    pier = Image.new("RGB", (320, 180), (40, 60, 110))
    pier.paste((230, 160, 60), (120, 60, 200, 120))
    pier.save(root / "pier.png")
    path = root / "m.yaml"
    path.write_text(manifest)
    run_dir = root / "jobs" / name
    result = anyio.run(execute, load_manifest(path), run_dir, RunOptions())
    assert result.exit_code == 0
    if then is not None:
        path.write_text(then)
    state = replay(load(run_dir / FILE, repair=False).records)
    return Run(run_dir, load_manifest(path), state)
