"""``RUN_DIR/storyboard.html``: the run as one self-contained page a director can open anywhere.

``write_storyboard(run_dir, manifest, state, picks=...)`` renders, in manifest order, every scene
as a section and every take as a card (:mod:`pipeline.outputs.cards`, template
``pipeline/templates/storyboard.html.j2``): its poster frame (click it to reveal the player),
the take, prompt, first/end frames and references as thumbnails, provider/model, duration,
seed, a colour-coded state badge, cost, credits when known, attempts, the reviewers' notes and
the error if any. Takes of one shot sit side by side in one frame; the picked take is marked
(no pick: none is), a rejected one dimmed. A header gives the run name, the number of takes in
each state, the total cost and links to the animatic, contact sheet, ``report.json`` and
``timeline.otio`` when they exist.

The page has no script and no network reference: the CSS (``pipeline/assets/storyboard.css``)
is inline, fonts are the system's, and the only links are relative (``shots/<id>.mp4``,
``posters/<id>.jpg``, ``thumbs/...``), so the run directory can be zipped, copied or served as
it is. Every piece of text is escaped (prompts and notes are user input). Call
:func:`pipeline.outputs.posters.ensure_posters` first for the poster frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline._util.fsutil import replacing
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.outputs.cards import board
from pipeline.outputs.pages import inline, render
from pipeline.outputs.thumbs import ensure_thumbs

#: The page's file name inside the run directory.
PAGE = "storyboard.html"


def render_storyboard(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
) -> str:
    """The page as a string (see :func:`write_storyboard`); reads nothing but file existence."""
    view = board(run_dir, manifest, state, picks)
    return render("storyboard.html.j2", board=view, css=inline("storyboard.css"))


def write_storyboard(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
) -> Path:
    """Write ``RUN_DIR/storyboard.html`` atomically (temporary file, fsync, rename).

    Args:
        run_dir: the run directory; links in the page are relative to it.
        manifest: gives the cards and their order (scenes and shots in manifest order); pass it
            with its re-rolled takes (:func:`pipeline.manifest.takes.with_rerolls`).
        state: the replayed checkpoint; a shot absent from it is shown as ``pending``.
        picks: ``"<scene>-<shot>"`` -> chosen take number
            (:func:`pipeline.outputs.picks.read_picks`), marked on the page.

    Returns:
        The page's path.

    Raises:
        OSError: the page (or a thumbnail of an input) cannot be written.
    """
    ensure_thumbs(run_dir, manifest.shots)
    page = render_storyboard(run_dir, manifest, state, picks=picks)
    dest = run_dir / PAGE
    with replacing(dest, mode=0o644) as tmp:  # 0644: a web server must read it
        tmp.write_text(page, encoding="utf-8")
    return dest
