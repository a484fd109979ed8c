"""What a director and a producer look at after a run, written into the run directory.

``write_outputs(run_dir, manifest)`` (after every run and by ``pipeline storyboard RUN_DIR``)::

    RUN_DIR/report.json        per shot: state, job, output, sha256, waits, polls, retries, costs
    RUN_DIR/storyboard.html    one self-contained page: scenes, shot cards, posters, players
    RUN_DIR/posters/<id>.jpg   a poster frame per finished video
    RUN_DIR/contact-sheet.png  a grid of poster frames with shot ids (50 rows of 4 a sheet; a
                               larger run goes on in contact-sheet-2.png...)
    RUN_DIR/animatic.mp4       the chosen take of every shot in order, with scene slates
    RUN_DIR/timeline.otio      the same cut as an OpenTimelineIO timeline, other takes below it

Everything is derived from the checkpoint and the verified videos, so it can be rebuilt at any
time, at a cost proportional to what changed (what each video gives is kept by its sha256 in
``RUN_DIR/.cache/outputs/``, :mod:`pipeline.outputs.cache`); each file is written atomically,
and the temporary files of a rebuild that was killed are removed at the start of the next (ten
minutes after they were last written). Synchronous and CPU-bound: run it in a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline._util.fsutil import sweep_temporaries
from pipeline.journal.checkpoint import FILE, load
from pipeline.journal.state import RunState, replay
from pipeline.manifest.loader import Manifest
from pipeline.manifest.takes import with_rerolls
from pipeline.outputs.animatic import write_animatic
from pipeline.outputs.cache import OutputCache
from pipeline.outputs.contact_sheet import write_contact_sheet
from pipeline.outputs.picks import read_picks
from pipeline.outputs.posters import POSTERS, ensure_posters
from pipeline.outputs.report import write_report
from pipeline.outputs.storyboard import write_storyboard
from pipeline.outputs.timeline import write_timeline

log = logging.getLogger("pipeline")


def write_outputs(run_dir: Path, manifest: Manifest) -> list[Path]:
    """Rebuild every output of ``run_dir`` from its checkpoint; returns the files written.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        OSError: an output cannot be written.
    """
    for where in (run_dir, run_dir / POSTERS):  # what an interrupted rebuild left behind
        for path in sweep_temporaries(where):
            log.info("removed %s (left by an interrupted rebuild)", path)
    records = load(run_dir / FILE, repair=False).records
    state = replay(records)
    manifest = with_rerolls(manifest, state)  # re-rolled takes are shown beside the others
    order = [s.id for s in manifest.shots]
    picks = read_picks(run_dir, state)  # the checkpoint's picks over picks.json's
    written = [write_report(run_dir, state, records, order, picks=picks)]
    written.extend(_visual_outputs(run_dir, manifest, state, picks))
    return written


def _visual_outputs(
    run_dir: Path, manifest: Manifest, state: RunState, picks: dict[str, int]
) -> list[Path]:
    """Posters, the storyboard page, the contact sheet, the animatic and the timeline."""
    cache = OutputCache(run_dir)  # what each video gives is made once (outputs.cache)
    ensure_posters(run_dir, state, cache=cache)
    others = [
        write_contact_sheet(run_dir, manifest, state, picks=picks, cache=cache),
        write_animatic(run_dir, manifest, state, picks=picks, cache=cache),
        write_timeline(run_dir, manifest, state, picks=picks, cache=cache),
    ]
    cache.save()
    log.info("outputs: %s", cache.stats.summary())
    # The page last: it links the files above that exist.
    return [write_storyboard(run_dir, manifest, state, picks=picks), *others]
