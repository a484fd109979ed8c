"""Text drawing shared by the clips and the outputs: one cached font lookup."""

from __future__ import annotations

from functools import lru_cache

from PIL import ImageFont


@lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font at ``size`` pixels (at least 8), cached per size."""
    return ImageFont.load_default(size=max(8, size))
