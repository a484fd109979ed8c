"""Offline rendering of real H.264 previs clips with Pillow (frames) and PyAV (encoding).

A clip is what a storyboard artist would cut together as previs:

- a title card with the shot id, the take and the wrapped prompt;
- when a first frame is given, a slow camera move (push-in with a drift) over it, after a short
  dissolve from the title card; an image whose aspect differs from the clip's is shown whole
  (fit inside what the camera sees at the end of its move, over a blurred copy of itself scaled
  to fill the frame), never cropped;
- when an end frame is given, a crossfade into it over the last part of the clip;
- a burn-in (shot id and timecode) in the lower left corner, as on dailies.

Clips are H.264 encoded with :data:`H264` (the animatic's segments use the same settings, so a
clip of the animatic's size and rate is copied into it without re-encoding). Everything here is
synchronous and CPU-bound: call it from a worker thread (``anyio.to_thread.run_sync``), never on
the event loop. Sizes are pixels, durations seconds.
"""

from __future__ import annotations

import colorsys
import math
import random
import tempfile
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from pipeline._util.fsutil import replacing
from pipeline.render.text import load_font

#: libx264 settings of every rendered clip and of the animatic's segments (no B-frames: packets
#: in presentation order). Equal settings (and size and rate) give equal SPS/PPS, which is what
#: lets :mod:`pipeline.outputs.concat` join such files by stream copy.
H264 = {"preset": "superfast", "crf": "23", "bf": "0"}
#: Aspect ratios closer than this (relative) count as the same: the image is covered, not fit.
SAME_ASPECT = 0.01
#: The camera move: it ends on this fraction of the frame (a push-in from 100 %).
END_ZOOM = 0.88

#: Short side in pixels per resolution name (``720p`` -> 1280x720 at 16:9).
RESOLUTIONS = {"240p": 240, "360p": 360, "480p": 480, "540p": 540, "720p": 720, "1080p": 1080}


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What to render.

    Attributes:
        title: large text of the title card and burn-in, e.g. ``"dawn-s02-t1"``.
        prompt: the shot's prompt, wrapped on the title card.
        duration_s: clip length in whole seconds (frames = duration_s * fps exactly).
        width / height: frame size in pixels (even numbers; H.264 4:2:0 needs them).
        fps: frames per second.
        image: first-frame image file, or None for a title-card-only clip.
        end_image: last-frame image file (crossfade target), or None.
        references: reference images shown as a strip on the title card.
        seed: varies the colour palette and the camera drift.
        subtitle: small text under the title (provider/model, take).
    """

    title: str
    prompt: str
    duration_s: int
    width: int
    height: int
    fps: int = 12
    image: Path | None = None
    end_image: Path | None = None
    references: tuple[Path, ...] = ()
    seed: int = 0
    subtitle: str = ""


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """What :func:`probe` reads back from a video file."""

    codec: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float


def parse_ratio(aspect_ratio: str) -> Fraction:
    """``"16:9"`` -> Fraction(16, 9). Raises ValueError on anything else."""
    left, sep, right = aspect_ratio.partition(":")
    if not sep or not left.isdigit() or not right.isdigit() or int(left) == 0 or int(right) == 0:
        raise ValueError(f"not an aspect ratio W:H: {aspect_ratio!r}")
    return Fraction(int(left), int(right))


def _even(value: float | Fraction) -> int:
    return max(2, round(float(value) / 2) * 2)


def frame_size(
    aspect_ratio: str, resolution: str | None = None, long_side: int = 640
) -> tuple[int, int]:
    """Frame size for a ratio: the resolution's short side, else ``long_side`` on the long side.

    >>> frame_size("16:9")
    (640, 360)
    >>> frame_size("9:16", "720p")
    (720, 1280)
    """
    ratio = parse_ratio(aspect_ratio)
    if resolution is not None and resolution in RESOLUTIONS:
        short = RESOLUTIONS[resolution]
        if ratio >= 1:
            return _even(short * ratio), _even(short)
        return _even(short), _even(short / ratio)
    if ratio >= 1:
        return _even(long_side), _even(long_side / ratio)
    return _even(long_side * ratio), _even(long_side)


def _palette(seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    hue = random.Random(seed).random()
    dark = colorsys.hsv_to_rgb(hue, 0.55, 0.22)
    accent = colorsys.hsv_to_rgb((hue + 0.08) % 1.0, 0.65, 0.95)
    return (
        (int(dark[0] * 255), int(dark[1] * 255), int(dark[2] * 255)),
        (int(accent[0] * 255), int(accent[1] * 255), int(accent[2] * 255)),
    )


def _title_card(spec: ClipSpec) -> Image.Image:
    w, h = spec.width, spec.height
    dark, accent = _palette(spec.seed)
    card = Image.new("RGB", (w, h), dark)
    draw = ImageDraw.Draw(card)
    for y in range(0, h, 2):  # a soft vertical vignette
        shade = int(28 * (y / h))
        draw.line([(0, y), (w, y)], fill=tuple(max(0, c - shade) for c in dark), width=2)
    margin = max(6, w // 20)
    title_font = load_font(max(10, min(h // 9, w // 12)))
    body_font = load_font(max(8, min(h // 17, w // 24)))
    title_size = getattr(title_font, "size", 10)
    draw.rectangle(
        [margin, margin, margin + max(3, w // 80), margin + int(title_size * 1.15)], fill=accent
    )
    x = margin + max(4, w // 80) + margin // 2
    draw.text((x, margin), spec.title, font=title_font, fill=(245, 245, 240))
    y = margin + int(title_font.size * 1.25) if hasattr(title_font, "size") else margin + h // 8
    if spec.subtitle:
        draw.text((x, y), spec.subtitle, font=body_font, fill=accent)
    body_size = getattr(body_font, "size", 10)
    chars = max(12, int((w - 2 * margin) / (body_size * 0.52)))
    lines = textwrap.wrap(spec.prompt, chars) or [""]
    max_lines = max(1, int((h - y - 3 * margin) / (body_size * 1.3)) - 1)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: chars - 1] + "…"]
    top = y + int(body_size * 1.8)
    for i, line in enumerate(lines):
        draw.text(
            (margin, top + i * int(body_size * 1.3)), line, font=body_font, fill=(225, 225, 220)
        )
    if spec.references:
        _reference_strip(card, spec.references, margin)
    return card


def _reference_strip(card: Image.Image, refs: tuple[Path, ...], margin: int) -> None:
    thumb_h = max(8, card.height // 6)
    x = card.width - margin
    for ref in reversed(refs[:4]):
        with Image.open(ref) as src:
            thumb = ImageOps.contain(src.convert("RGB"), (thumb_h * 2, thumb_h))
        x -= thumb.width
        card.paste(thumb, (x, card.height - margin - thumb.height))
        x -= margin // 2


def _drift(seed: int) -> tuple[float, float]:
    """The camera's drift direction for ``seed``: (dx in [-1, 1], dy in [-0.6, 0.6])."""
    rng = random.Random(seed)
    return rng.uniform(-1, 1), rng.uniform(-0.6, 0.6)


def _end_box(w: int, h: int, seed: int) -> tuple[int, int, int, int]:
    """The last view of the camera over a ``w`` x ``h`` source: in view for the whole move.

    Returns (left, top, right, bottom) in whole pixels, inside the exact view.
    """
    dx, dy = _drift(seed)
    cw, ch = w * END_ZOOM, h * END_ZOOM
    cx, cy = w / 2 + dx * (w - cw) / 2, h / 2 + dy * (h - ch) / 2
    left, top = max(0, math.ceil(cx - cw / 2)), max(0, math.ceil(cy - ch / 2))
    return left, top, min(w, math.floor(cx + cw / 2)), min(h, math.floor(cy + ch / 2))


def fit_over_blur(
    image: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """The whole of ``image``, fit inside ``box`` of a ``size`` frame over a blurred fill.

    Args:
        image: any RGB image.
        size: (width, height) of the result.
        box: (left, top, right, bottom) inside the frame where the image is fit (aspect kept,
            centred); None: the whole frame.

    Returns:
        An RGB image of ``size``: ``image`` scaled to fit ``box``, over a copy of ``image``
        scaled to fill the frame (cropped), blurred and darkened.
    """
    w, h = size
    small = ImageOps.fit(image, (max(1, w // 4), max(1, h // 4)), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(max(1.0, min(w, h) / 80)))
    frame = ImageEnhance.Brightness(small).enhance(0.55).resize(size, Image.Resampling.BILINEAR)
    left, top, right, bottom = box or (0, 0, w, h)
    inner = ImageOps.contain(image, (right - left, bottom - top), Image.Resampling.LANCZOS)
    frame.paste(
        inner,
        (left + (right - left - inner.width) // 2, top + (bottom - top - inner.height) // 2),
    )
    return frame


def _framed(path: Path, w: int, h: int, seed: int) -> Image.Image:
    """The image as the camera's source, ``w`` x ``h``.

    It covers the frame when its aspect is the frame's (a few pixels cropped); otherwise it is
    whole, inside the camera's last view, over a blurred fill (:func:`fit_over_blur`).
    """
    with Image.open(path) as src:
        img = ImageOps.exif_transpose(src).convert("RGB")
    if abs((img.width / img.height) / (w / h) - 1) <= SAME_ASPECT:
        return ImageOps.fit(img, (w, h), Image.Resampling.LANCZOS)
    return fit_over_blur(img, (w, h), _end_box(w, h, seed))


class _CameraMove:
    """A push-in from 100 % to :data:`END_ZOOM` of the source, drifting along a seeded direction."""

    def __init__(self, source: Image.Image, w: int, h: int, seed: int) -> None:
        self.source, self.w, self.h = source, w, h
        self.dx, self.dy = _drift(seed)

    def frame(self, t: float) -> Image.Image:
        sw, sh = self.source.size
        zoom = 1.0 - (1.0 - END_ZOOM) * t
        cw, ch = sw * zoom, sh * zoom
        # Each view lies inside the one before (the drift grows with the zoom), so what is in
        # the last view (:func:`_end_box`) is in view for the whole move.
        cx = sw / 2 + self.dx * (sw - cw) / 2
        cy = sh / 2 + self.dy * (sh - ch) / 2
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        return self.source.resize((self.w, self.h), Image.Resampling.BILINEAR, box=box)


def _burn_in(frame: Image.Image, label: str, index: int, fps: int) -> None:
    size = max(8, min(frame.width, frame.height) // 22)
    font = load_font(size)
    seconds, sub = divmod(index, fps)
    text = f"{label}  {seconds // 60:02d}:{seconds % 60:02d}:{sub:02d}"
    draw = ImageDraw.Draw(frame)
    pad = max(2, size // 3)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = frame.height - (bottom - top) - 3 * pad
    draw.rectangle([pad, y - pad, pad * 3 + right - left, y + bottom - top + pad], fill=(0, 0, 0))
    draw.text((pad * 2, y - top), text, font=font, fill=(240, 240, 240))


def _frame_at(
    i: int,
    total: int,
    spec: ClipSpec,
    card: Image.Image,
    first: _CameraMove | None,
    last: _CameraMove | None,
) -> Image.Image:
    fps = spec.fps
    if first is None:
        frame = card.copy()
        bar = int(spec.width * (i + 1) / total)
        ImageDraw.Draw(frame).rectangle(
            [0, spec.height - max(2, spec.height // 90), bar, spec.height],
            fill=_palette(spec.seed)[1],
        )
        return frame
    title_frames = min(total // 3, max(1, fps))  # about one second of title card
    dissolve = max(1, fps // 2)
    t = i / max(1, total - 1)
    frame = first.frame(t)
    if last is not None:
        start = int(total * 0.55)
        if i >= start:
            alpha = (i - start + 1) / max(1, total - start)
            frame = Image.blend(frame, last.frame(t), min(1.0, alpha))
    if i < title_frames:
        return card.copy()
    if i < title_frames + dissolve:
        return Image.blend(card, frame, (i - title_frames + 1) / (dissolve + 1))
    return frame


def render_clip(spec: ClipSpec, dest: Path) -> None:
    """Render ``spec`` as an H.264 MP4 (yuv420p, faststart) at ``dest``.

    The file is written next to ``dest`` under a temporary name and renamed into place, so
    ``dest`` is either absent or complete. Frames: exactly ``duration_s * fps``.

    Raises:
        OSError: an input image cannot be read or the file cannot be written.
        ValueError: a size or duration that cannot be encoded.
    """
    if spec.duration_s <= 0 or spec.fps <= 0 or spec.width % 2 or spec.height % 2:
        raise ValueError(f"cannot encode {spec.width}x{spec.height} for {spec.duration_s}s")
    total = spec.duration_s * spec.fps
    card = _title_card(spec)
    first = last = None
    w, h = spec.width, spec.height
    if spec.image is not None:
        first = _CameraMove(_framed(spec.image, w, h, spec.seed), w, h, spec.seed)
    if spec.end_image is not None:
        last = _CameraMove(_framed(spec.end_image, w, h, spec.seed + 1), w, h, spec.seed + 1)
    with replacing(dest, prefix=".render-", suffix=".mp4") as tmp:  # local.py sweeps .render-*
        _encode(spec, total, card, first, last, tmp)


def _encode(
    spec: ClipSpec,
    total: int,
    card: Image.Image,
    first: _CameraMove | None,
    last: _CameraMove | None,
    path: Path,
) -> None:
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {**H264, "tune": "stillimage"}  # tune: same SPS/PPS as without
        for i in range(total):
            image = _frame_at(i, total, spec, card, first, last)
            _burn_in(image, spec.title, i, spec.fps)
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def tiny_mp4(
    seconds: int, aspect_ratio: str = "16:9", *, label: str = "sim", seed: int = 0
) -> bytes:
    """A small, fast, real H.264 MP4 (160 px long side, 6 fps) for simulators and tests.

    Returns:
        The file's bytes (a few kB per second).
    """
    w, h = frame_size(aspect_ratio, None, long_side=160)
    spec = ClipSpec(
        title=label, prompt="", duration_s=max(1, seconds), width=w, height=h, fps=6, seed=seed
    )
    with tempfile.TemporaryDirectory(prefix="pipeline-tiny-") as tmp:
        dest = Path(tmp) / "clip.mp4"
        render_clip(spec, dest)
        return dest.read_bytes()


def probe(path: Path) -> ClipInfo:
    """Read codec, size, frame rate, frame count and duration of the first video stream.

    Raises:
        av.error.FFmpegError (an ``OSError``/``ValueError`` subclass): not a readable video.
        ValueError: the file has no video stream.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = frames / fps if fps else 0.0
        return ClipInfo(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            frames=frames,
            duration_s=duration,
        )
