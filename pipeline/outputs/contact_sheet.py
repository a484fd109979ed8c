"""The contact sheet: one PNG with a poster frame of every take, scene by scene.

``write_contact_sheet(run_dir, manifest, state)`` writes ``RUN_DIR/contact-sheet.png``::

    +--------------------------------------------------------------+
    | harbor-dawn                                 title row        |
    | 12 shots · 14 takes · 3 scenes · 14 done                     |
    | dawn  ------------------------------------  4 shots · 15 s   |  scene header
    | [poster] [poster] [poster] [poster]                          |  cells in manifest order
    |  dawn-s01 dawn-s02-t1 ...    (id, take, duration, state)     |
    | market -----------------------------------                   |
    | ...                                                          |
    +--------------------------------------------------------------+

A poster is the middle frame of the shot's verified MP4, decoded with PyAV and letterboxed into a
16:9 cell; a shot without a readable video gets a dark cell naming its state (``failed``,
``pending``...). The chosen take of a multi-take shot (see :mod:`pipeline.outputs.picks`) is framed
in amber. Each cell's picture is decoded once per video and kept in the outputs' cache
(:mod:`pipeline.outputs.cache`), and the sheet is only drawn again when something it shows
changed. Helpers shared with :mod:`pipeline.outputs.animatic` live here too: choosing takes and
reading a middle frame (drawing is :mod:`pipeline.outputs.drawing`, re-exported here).
Synchronous and CPU-bound: run it in a worker thread. Sizes are pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import av
from PIL import Image, ImageDraw

from pipeline._util.fsutil import replacing
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot
from pipeline.outputs.cache import OutputCache, entry_key, own_cache
from pipeline.outputs.drawing import ACCENT as ACCENT
from pipeline.outputs.drawing import BACKGROUND as BACKGROUND
from pipeline.outputs.drawing import CELL as CELL
from pipeline.outputs.drawing import MISSING_FILL as MISSING_FILL
from pipeline.outputs.drawing import MUTED as MUTED
from pipeline.outputs.drawing import RGB as RGB
from pipeline.outputs.drawing import STATE_COLOURS as STATE_COLOURS
from pipeline.outputs.drawing import TEXT as TEXT
from pipeline.outputs.drawing import Font as Font
from pipeline.outputs.drawing import draw_text as draw_text
from pipeline.outputs.drawing import fit_text as fit_text
from pipeline.outputs.drawing import letterbox as letterbox
from pipeline.outputs.drawing import text_width as text_width
from pipeline.outputs.posters import poster_key
from pipeline.outputs.sources import DECODE_ERRORS as DECODE_ERRORS
from pipeline.outputs.sources import chosen_take as chosen_take
from pipeline.outputs.sources import group_takes as group_takes
from pipeline.outputs.sources import middle_frame as middle_frame
from pipeline.outputs.sources import pick_key as pick_key
from pipeline.outputs.sources import shot_video as shot_video
from pipeline.render.text import load_font

SHEET = "contact-sheet.png"

#: A rectangle (left, top, right, bottom), right and bottom exclusive.
Box = tuple[int, int, int, int]
#: A cell to draw: the take, why it has no picture (``done`` if it has), its tile key, its video.
_Cell = tuple[Shot, str, tuple[str, str] | None, Path | None]

MARGIN, GAP = 28, 18
THUMB_W, THUMB_H = 288, 162
LABEL_H = 46
TITLE_H, SCENE_H = 78, 44


@dataclass(frozen=True, slots=True)
class SheetLayout:
    """Where everything goes on the sheet.

    Attributes:
        size: (width, height) of the PNG.
        cells: shot id -> poster box, in manifest order (the label sits under it).
        labels: shot id -> label box under the poster.
        scenes: scene id -> header box.
    """

    size: tuple[int, int]
    cells: dict[str, Box] = field(default_factory=dict)
    labels: dict[str, Box] = field(default_factory=dict)
    scenes: dict[str, Box] = field(default_factory=dict)


def sheet_layout(manifest: Manifest, columns: int = 4) -> SheetLayout:
    """Compute the grid: a title row, then per scene a header and rows of ``columns`` cells.

    Raises:
        ValueError: ``columns`` is below 1.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    width = 2 * MARGIN + columns * THUMB_W + (columns - 1) * GAP
    cells: dict[str, Box] = {}
    labels: dict[str, Box] = {}
    scenes: dict[str, Box] = {}
    by_scene: dict[str, list[Shot]] = {}
    for shot in manifest.shots:
        by_scene.setdefault(shot.scene, []).append(shot)
    y = MARGIN + TITLE_H
    row_h = THUMB_H + LABEL_H + GAP
    for scene, shots in by_scene.items():
        scenes[scene] = (MARGIN, y, width - MARGIN, y + SCENE_H)
        y += SCENE_H
        for i, shot in enumerate(shots):
            row, col = divmod(i, columns)
            left, top = MARGIN + col * (THUMB_W + GAP), y + row * row_h
            cells[shot.id] = (left, top, left + THUMB_W, top + THUMB_H)
            labels[shot.id] = (left, top + THUMB_H, left + THUMB_W, top + THUMB_H + LABEL_H)
        y += -(-len(shots) // columns) * row_h + GAP // 2
    return SheetLayout((width, y + MARGIN - GAP), cells, labels, scenes)


def write_contact_sheet(
    run_dir: Path,
    manifest: Manifest,
    state: RunState,
    *,
    picks: Mapping[str, int] | None = None,
    columns: int = 4,
    cache: OutputCache | None = None,
) -> Path:
    """Write ``RUN_DIR/contact-sheet.png`` (atomically) and return its path.

    The sheet is not written again when nothing it shows has changed; each cell's picture (a
    tile: the letterboxed middle frame) is decoded once per video and kept in ``cache``
    (:mod:`pipeline.outputs.cache`).

    Args:
        run_dir: the run directory (shot outputs are relative to it).
        manifest: the loaded manifest: cells follow its shot order, headers its scenes.
        state: the replayed checkpoint: which shots are done and where their videos are.
        picks: chosen takes (``"<scene>-<shot name>"`` -> take); framed in amber.
        columns: cells per row.
        cache: the rebuild's cache (None: the run directory's own, saved before returning).

    Raises:
        ValueError: ``columns`` is below 1.
        OSError: the PNG cannot be written. An unreadable video is not an error: its cell
            says ``unreadable``.
    """
    layout = sheet_layout(manifest, columns)
    cache, owned = own_cache(run_dir, cache)
    groups = group_takes(manifest.shots)
    # Framed only when picked (no pick: no frame, as on the storyboard page).
    wanted = picks or {}
    chosen = {
        s.id
        for t in groups.values()
        if len(t) > 1
        for s in [chosen_take(t, wanted)]
        if wanted.get(pick_key(s)) == (s.take or 1)
    }
    cells: list[_Cell] = []
    for shot in manifest.shots:
        path, reason = shot_video(run_dir, shot, state)
        tile = _tile_key(cache, state, shot) if path is not None else None
        if path is not None and tile is None:
            reason = "unreadable"
        cells.append((shot, reason, tile, path))
    rows = [  # everything a cell shows: the sheet is drawn again when one of these changes
        (
            s.id,
            s.scene,
            s.name,
            s.take,
            s.duration,
            s.aspect_ratio,
            reason,
            tile[0] if tile else None,
            s.id in chosen,
            len(groups[pick_key(s)]),
            _error(state, s) if reason != "done" else "",
        )
        for s, reason, tile, _ in cells
    ]
    key = entry_key(
        "sheet", name=manifest.name, scenes=len(manifest.scenes), cols=columns, rows=rows
    )
    dest = run_dir / SHEET
    if not cache.current(dest, key):
        _compose(cache, layout, manifest, state, (cells, chosen, groups), dest)
        cache.record(dest, key)
        cache.stats.written["sheet"] += 1
    else:
        cache.stats.kept["sheet"] += 1
    if owned:
        cache.save()
    return dest


def _compose(
    cache: OutputCache,
    layout: SheetLayout,
    manifest: Manifest,
    state: RunState,
    what: tuple[list[_Cell], set[str], dict[str, list[Shot]]],
    dest: Path,
) -> None:
    """Draw the whole sheet (tiles from the cache, decoded on a miss) and write it."""
    cells, chosen, groups = what
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    reasons: dict[str, str] = {}
    for shot, reason, tile, path in cells:
        if tile is not None and path is not None:
            picture = _tile(cache, tile, path)
            if picture is None:
                reason = "unreadable"
            else:
                sheet.paste(picture, layout.cells[shot.id][:2])
        if reason != "done":
            _missing_cell(draw, layout.cells[shot.id], shot, state, reason)
        reasons[shot.id] = reason
        takes = len(groups[pick_key(shot)])
        _label(draw, layout.labels[shot.id], shot, takes, reason, shot.id in chosen)
        if shot.id in chosen:
            left, top, right, bottom = layout.cells[shot.id]
            draw.rectangle([left - 3, top - 3, right + 2, bottom + 2], outline=ACCENT, width=3)
    _title(draw, layout, manifest, reasons)
    _scene_headers(draw, layout, manifest)
    _save_atomic(sheet, dest)


#: What the cache holds for a video that cannot be decoded (its cell says ``unreadable``).
_UNREADABLE = b"unreadable"


def _tile_key(cache: OutputCache, state: RunState, shot: Shot) -> tuple[str, str] | None:
    """The tile's cache key and the video's identity, or None when the video cannot be read."""
    try:
        video = cache.video_id(state.shots[shot.id])
    except OSError:
        return None
    if video is None:
        return None
    return entry_key("tile", video=video, size=[THUMB_W, THUMB_H], fill=list(CELL)), video


def _tile(cache: OutputCache, keys: tuple[str, str], video: Path) -> Image.Image | None:
    """The cell's picture (None: the video is unreadable).

    From the cache, else made from the video's poster in the cache, else decoded from ``video``.
    """
    key = keys[0]
    data = cache.read("tile", key)
    if data is not None and data != _UNREADABLE:
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.convert("RGB")
        except OSError:
            cache.evict("tile", key)  # verified bytes Pillow cannot read: made by another build
            data = None
    if data is None:
        try:
            picture = letterbox(_middle(cache, keys[1], video), (THUMB_W, THUMB_H), CELL)
        except DECODE_ERRORS as exc:
            if isinstance(exc, (ValueError, av.error.FFmpegError)):  # not a passing I/O error
                cache.store("tile", key, ".bin", _UNREADABLE)
            return None
        out = io.BytesIO()
        picture.save(out, format="PNG", compress_level=1)
        cache.store("tile", key, ".png", out.getvalue())
        return picture
    return None


def _middle(cache: OutputCache, video_id: str, video: Path) -> Image.Image:
    """The video's middle frame: its poster if the cache has it (no decoding), else decoded."""
    poster = cache.read("poster", poster_key(video_id))
    if poster is not None:
        try:
            with Image.open(io.BytesIO(poster)) as img:
                return img.convert("RGB")
        except OSError:
            pass
    return middle_frame(video)


def _error(state: RunState, shot: Shot) -> str:
    rec = state.shots.get(shot.id)
    return rec.error or "" if rec is not None else ""


def _missing_cell(
    draw: ImageDraw.ImageDraw, box: Box, shot: Shot, state: RunState, reason: str
) -> None:
    left, top, right, bottom = box
    draw.rectangle([left, top, right - 1, bottom - 1], fill=MISSING_FILL.get(reason, (36, 37, 44)))
    big, small = load_font(22), load_font(13)
    colour = STATE_COLOURS.get(reason, MUTED)
    draw_text(draw, (left + 14, top + 14), fit_text(shot.id, big, THUMB_W - 28), big, TEXT)
    draw_text(draw, (left + 14, top + 48), reason.replace("_", " "), load_font(18), colour)
    rec = state.shots.get(shot.id)
    if rec is not None and rec.error:
        draw_text(
            draw, (left + 14, bottom - 28), fit_text(rec.error, small, THUMB_W - 28), small, MUTED
        )


def _label(
    draw: ImageDraw.ImageDraw, box: Box, shot: Shot, takes: int, reason: str, chosen: bool
) -> None:
    left, top, _, _ = box
    label = load_font(16)
    draw_text(draw, (left + 2, top + 7), fit_text(shot.id, label, THUMB_W - 4), label, TEXT)
    detail = [f"{shot.duration} s", shot.aspect_ratio]
    if shot.take is not None:
        detail.insert(0, f"take {shot.take}/{takes}")
    x = left + 2
    small = load_font(13)
    line = " · ".join(detail)
    draw_text(draw, (x, top + 28), line, small, MUTED)
    x += text_width(line + " · ", small)
    if reason != "done":
        draw_text(
            draw, (x, top + 28), reason.replace("_", " "), small, STATE_COLOURS.get(reason, MUTED)
        )
    elif chosen:
        draw_text(draw, (x, top + 28), "picked", small, ACCENT)


def _title(
    draw: ImageDraw.ImageDraw, layout: SheetLayout, manifest: Manifest, reasons: Mapping[str, str]
) -> None:
    draw_text(draw, (MARGIN, MARGIN - 4), manifest.name, load_font(32), TEXT)
    shots = len(group_takes(manifest.shots))
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{shots} shots", f"{len(manifest.shots)} takes", f"{len(manifest.scenes)} scenes"]
    parts += [f"{n} {r.replace('_', ' ')}" for r, n in counts.items()]
    draw_text(draw, (MARGIN, MARGIN + 40), " · ".join(parts), load_font(15), MUTED)
    width = layout.size[0]
    draw.rectangle(
        [MARGIN, MARGIN + TITLE_H - 14, width - MARGIN, MARGIN + TITLE_H - 13], fill=(60, 62, 70)
    )


def _scene_headers(draw: ImageDraw.ImageDraw, layout: SheetLayout, manifest: Manifest) -> None:
    for index, (scene, box) in enumerate(layout.scenes.items(), start=1):
        left, top, right, _ = box
        shots = [s for s in manifest.shots if s.scene == scene]
        seconds = sum(chosen_take(t, None).duration for t in group_takes(shots).values())
        font = load_font(20)
        name = f"{index}  {scene}"
        draw_text(draw, (left, top + 6), name, font, ACCENT)
        info = f"{len(group_takes(shots))} shots · {seconds} s"
        small = load_font(14)
        info_w = text_width(info, small)
        draw_text(draw, (right - info_w, top + 11), info, small, MUTED)
        rule_left = left + text_width(name, font) + 14
        if right - info_w - 14 > rule_left:
            draw.rectangle([rule_left, top + 19, right - info_w - 14, top + 19], fill=(70, 72, 80))


def _save_atomic(image: Image.Image, dest: Path) -> Path:
    with replacing(dest, prefix=".contact-", suffix=".png") as tmp:
        image.save(tmp, format="PNG", compress_level=3)  # 8x faster than optimize, +20 %
    return dest
