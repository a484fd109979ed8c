"""Chosen takes: which take of each multi-take shot the animatic and the page use.

Kept in ``RUN_DIR/picks.json`` (``{"<scene>-<shot>": take}``), written atomically by
``pipeline pick RUN_DIR SHOT TAKE``; a shot without a pick uses its first take.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import ManifestError
from pipeline.manifest.loader import Manifest
from pipeline.outputs.report import write_json_atomic

PICKS = "picks.json"


def read_picks(run_dir: Path) -> dict[str, int]:
    """The recorded picks (empty when none). A damaged file counts as no picks."""
    try:
        data = json.loads((run_dir / PICKS).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


def set_pick(run_dir: Path, manifest: Manifest, shot: str, take: int) -> dict[str, int]:
    """Record ``take`` as the chosen take of ``shot`` (``<scene>-<shot>``, e.g. ``dawn-s02``).

    Raises:
        ManifestError: the shot has no such take (the message lists the shots with takes).
    """
    takes: dict[str, list[int]] = {}
    for s in manifest.shots:
        if s.take is not None:
            takes.setdefault(f"{s.scene}-{s.name}", []).append(s.take)
    if take not in takes.get(shot, []):
        known = ", ".join(f"{k} (1-{max(v)})" for k, v in takes.items()) or "none"
        raise ManifestError.single(
            str(manifest.path),
            None,
            "SHOT TAKE",
            f"{shot} has no take {take}; shots with takes: {known}",
        )
    picks = read_picks(run_dir)
    picks[shot] = take
    write_json_atomic(run_dir / PICKS, picks)
    return picks
