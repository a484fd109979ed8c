"""Thumbnails of the shots' input media (first and end frames, references) for the pages.

``RUN_DIR/thumbs/<sha256 prefix>.jpg``: at most :data:`SIZE` pixels on the long side, one per
distinct local image or video (a video's first frame), made once (kept while the file exists:
its name is the content hash of the input). Audio and remote (URL) media have none: the pages
show their names. Synchronous and CPU-bound, like the other outputs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from pipeline._util.fsutil import replacing
from pipeline.models import Asset, MediaRole, Shot
from pipeline.outputs.posters import poster_frame

log = logging.getLogger("pipeline")

THUMBS = "thumbs"
#: Longest side of a thumbnail, in pixels.
SIZE = 240


def thumb_name(asset: Asset) -> str | None:
    """The thumbnail's path relative to the run directory, or None when it can have none."""
    if asset.path is None or asset.sha256 is None or asset.role == MediaRole.REFERENCE_AUDIO:
        return None
    return f"{THUMBS}/{asset.sha256[:24]}.jpg"


def _image(asset: Asset) -> Image.Image:
    assert asset.path is not None
    if asset.role == MediaRole.REFERENCE_VIDEO:
        with tempfile.TemporaryDirectory() as tmp:
            frame = poster_frame(asset.path, Path(tmp) / "first.jpg", at=0.0)
            with Image.open(frame) as img:
                return img.convert("RGB")
    with Image.open(asset.path) as img:
        return img.convert("RGB")


def ensure_thumbs(run_dir: Path, shots: Iterable[Shot]) -> dict[str, str]:
    """Make the thumbnails of every input of ``shots`` that can have one.

    Returns:
        asset key (content hash) -> thumbnail path relative to ``run_dir``, for each made or
        already there. A file that cannot be decoded (a truncated JPEG...) is logged and has
        none; it is not an error.

    Raises:
        OSError: a thumbnail cannot be written.
    """
    out: dict[str, str] = {}
    failed: set[str] = set()
    for shot in shots:
        for asset in shot.assets:
            name = thumb_name(asset)
            if name is None or asset.key in out or asset.key in failed:
                continue
            dest = run_dir / name
            if dest.is_file():
                out[asset.key] = name
                continue
            try:
                image = _image(asset)
                image.thumbnail((SIZE, SIZE))
            except (OSError, ValueError, SyntaxError) as exc:  # PIL and PyAV decode errors
                log.info("%s: no thumbnail of %s (%s)", shot.id, asset.path, exc)
                failed.add(asset.key)
                continue
            dest.parent.mkdir(exist_ok=True)
            with replacing(dest, mode=0o644) as tmp:
                image.save(tmp, format="JPEG", quality=82)
            out[asset.key] = name
    return out
