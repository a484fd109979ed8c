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
in
amber. Helpers shared with :mod:`pipeline.outputs.animatic` live here too: choosing takes, reading a
poster frame, letterboxing and drawing text with the bundled font. Synchronous and CPU-bound: run
it in a worker thread. Sizes are pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipeline._util.fsutil import replacing
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot, ShotState
from pipeline.render.text import load_font

SHEET = "contact-sheet.png"

#: A rectangle (left, top, right, bottom), right and bottom exclusive.
Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]

BACKGROUND: RGB = (24, 25, 29)
CELL: RGB = (10, 10, 12)
TEXT: RGB = (236, 236, 232)
MUTED: RGB = (150, 152, 160)
ACCENT: RGB = (244, 180, 60)
STATE_COLOURS: Mapping[str, RGB] = {
    "done": (120, 200, 140),
    "failed": (236, 96, 88),
    "cancelled": (200, 120, 100),
    "needs_reconcile": (236, 170, 70),
    "unreadable": (236, 96, 88),
}
MISSING_FILL: Mapping[str, RGB] = {"failed": (52, 24, 26), "unreadable": (52, 24, 26)}

MARGIN, GAP = 28, 18
THUMB_W, THUMB_H = 288, 162
LABEL_H = 46
TITLE_H, SCENE_H = 78, 44

#: Errors PyAV raises on a file that is not a readable video.
DECODE_ERRORS = (OSError, ValueError, av.error.FFmpegError)


def pick_key(shot: Shot) -> str:
    """The key of a shot in ``picks.json``: ``"<scene>-<shot name>"`` (e.g. ``dawn-s02``)."""
    return f"{shot.scene}-{shot.name}"


def group_takes(shots: Iterable[Shot]) -> dict[str, list[Shot]]:
    """Takes of every shot, keyed by :func:`pick_key`, in manifest order (first take first)."""
    groups: dict[str, list[Shot]] = {}
    for shot in shots:
        groups.setdefault(pick_key(shot), []).append(shot)
    return groups


def chosen_take(takes: list[Shot], picks: Mapping[str, int] | None) -> Shot:
    """The take the animatic uses: the picked take number if it exists, else the first take.

    Args:
        takes: every take of one shot (non-empty), as from :func:`group_takes`.
        picks: ``"<scene>-<shot name>"`` -> take number (1-based); None or absent: take 1.
    """
    wanted = (picks or {}).get(pick_key(takes[0]), 1)
    return next((s for s in takes if s.take == wanted), takes[0])


def shot_video(run_dir: Path, shot: Shot, state: RunState) -> tuple[Path | None, str]:
    """Where a shot's verified video is, or why there is none.

    Returns:
        ``(path, "done")`` when the checkpoint says done and the file exists, else
        ``(None, reason)`` with the shot's state (``"pending"`` for a shot never planned) or
        ``"file not found"``.
    """
    rec = state.shots.get(shot.id)
    if rec is None:
        return None, ShotState.PENDING.value
    if rec.state != ShotState.DONE or not rec.output:
        return None, rec.state.value
    path = run_dir / rec.output
    return (path, "done") if path.is_file() else (None, "file not found")


def middle_frame(path: Path) -> Image.Image:
    """The middle frame of the first video stream of ``path`` (RGB), decoded with PyAV.

    Seeks to the keyframe before the middle and decodes forward, so a long clip costs a few
    frames, not the whole file.

    Raises:
        OSError, ValueError, av.error.FFmpegError: not a readable video (see ``DECODE_ERRORS``).
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time and base else 0.0
        if stream.duration is not None and base is not None:
            length = float(stream.duration * base)
        else:
            length = (container.duration or 0) / av.time_base
        middle = start + length / 2
        if length > 0 and base is not None:
            container.seek(int(middle / base), stream=stream, backward=True)
        found = None
        for frame in container.decode(stream):
            found = frame
            if frame.time is None or frame.time >= middle - 1e-6:
                break
        if found is None:
            raise ValueError(f"{path}: no frame could be decoded")
        image: Image.Image = found.to_image()  # type: ignore[no-untyped-call]
        return image.convert("RGB")


def letterbox(image: Image.Image, size: tuple[int, int], fill: RGB = (0, 0, 0)) -> Image.Image:
    """``image`` scaled to fit ``size`` with its aspect kept, centred on bars of ``fill``."""
    canvas = Image.new("RGB", size, fill)
    fitted = ImageOps.contain(image, size, Image.Resampling.BILINEAR)
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return canvas


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def text_width(text: str, font: Font) -> int:
    """Width in pixels of ``text`` as :func:`draw_text` draws it."""
    dash = _dash_width(font)
    parts = text.split("—")
    return int(sum(font.getlength(p) for p in parts) + dash * (len(parts) - 1))


def _dash_width(font: Font) -> float:
    return float(getattr(font, "size", 10)) * 0.9


@lru_cache(maxsize=32)
def _hyphen_rows(font: Font) -> tuple[int, int]:
    """Top and bottom (exclusive) rows of the ink of ``-`` drawn at (0, 0) in ``font``."""
    size = int(getattr(font, "size", 10))
    probe = Image.new("L", (size * 2, size * 2))
    ImageDraw.Draw(probe).text((0, 0), "-", font=font, fill=255)
    box = probe.getbbox()
    return (box[1], box[3]) if box else (size // 2, size // 2 + 1)


def draw_text(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Font, fill: RGB
) -> None:
    """Draw one line of text; an em dash (absent from the bundled font) is drawn as a rule."""
    x, y = xy
    size = float(getattr(font, "size", 10))
    parts = text.split("—")
    for i, part in enumerate(parts):
        draw.text((x, y), part, font=font, fill=fill)
        x += int(font.getlength(part))
        if i < len(parts) - 1:
            top, bottom = _hyphen_rows(font)  # a rule at the hyphen's height and weight
            left, right = x + max(1, int(size / 12)), x + int(_dash_width(font)) - int(size / 12)
            draw.rectangle([left, y + top, right, y + bottom - 1], fill=fill)
            x += int(_dash_width(font))


def fit_text(text: str, font: Font, width: int) -> str:
    """``text`` cut with an ellipsis so that it fits in ``width`` pixels."""
    if text_width(text, font) <= width:
        return text
    while text and text_width(text + "…", font) > width:
        text = text[:-1]
    return text + "…"


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
) -> Path:
    """Write ``RUN_DIR/contact-sheet.png`` (atomically) and return its path.

    Args:
        run_dir: the run directory (shot outputs are relative to it).
        manifest: the loaded manifest: cells follow its shot order, headers its scenes.
        state: the replayed checkpoint: which shots are done and where their videos are.
        picks: chosen takes (``"<scene>-<shot name>"`` -> take); framed in amber.
        columns: cells per row.

    Raises:
        ValueError: ``columns`` is below 1.
        OSError: the PNG cannot be written. An unreadable video is not an error: its cell
            says ``unreadable``.
    """
    layout = sheet_layout(manifest, columns)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    groups = group_takes(manifest.shots)
    chosen = {chosen_take(t, picks).id for t in groups.values() if len(t) > 1}
    reasons: dict[str, str] = {}
    for shot in manifest.shots:
        path, reason = shot_video(run_dir, shot, state)
        if path is not None:
            try:
                sheet.paste(
                    letterbox(middle_frame(path), (THUMB_W, THUMB_H), CELL),
                    layout.cells[shot.id][:2],
                )
            except DECODE_ERRORS:
                reason = "unreadable"
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
    return _save_atomic(sheet, run_dir / SHEET)


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
        image.save(tmp, format="PNG", optimize=True)
    return dest
