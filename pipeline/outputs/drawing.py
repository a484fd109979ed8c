"""Drawing shared by the contact sheet and the animatic's slates.

Colours, text with the bundled font (an em dash drawn as a rule, long text cut with an
ellipsis), letterboxing.

Pure Pillow, no I/O. Sizes are pixels; colours RGB tuples.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

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

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def letterbox(image: Image.Image, size: tuple[int, int], fill: RGB = (0, 0, 0)) -> Image.Image:
    """``image`` scaled to fit ``size`` with its aspect kept, centred on bars of ``fill``."""
    canvas = Image.new("RGB", size, fill)
    fitted = ImageOps.contain(image, size, Image.Resampling.BILINEAR)
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return canvas


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
