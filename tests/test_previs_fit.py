"""Previs clips keep the whole first frame when its aspect differs from the shot's
(pipeline.render.clips: fit inside the camera's view over a blurred fill, never cropped)."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image, ImageStat

from pipeline.render.clips import ClipSpec, fit_over_blur, render_clip

RED = (230, 20, 20)
GREEN = (20, 200, 60)


def bordered(size: tuple[int, int], border: int) -> Image.Image:
    """A green picture with a thick red border: cropping any side loses red."""
    image = Image.new("RGB", size, RED)
    image.paste(GREEN, (border, border, size[0] - border, size[1] - border))
    return image


def red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 150 and g < 90 and b < 90


def frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]


def red_extent(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the red pixels (inclusive)."""
    pixels = image.convert("RGB").load()
    assert pixels is not None
    xs, ys = [], []
    for y in range(0, image.height):
        for x in range(0, image.width):
            if red(pixels[x, y]):  # type: ignore[arg-type]
                xs.append(x)
                ys.append(y)
    return min(xs), min(ys), max(xs), max(ys)


def test_fit_over_blur_keeps_every_edge_of_a_tall_image() -> None:
    out = fit_over_blur(bordered((100, 200), 8), (320, 180))
    assert out.size == (320, 180)
    # scaled to 90 x 180, centred: x 115..204, every row
    for y in (0, 1, 90, 178, 179):
        assert red(out.getpixel((116, y))), y  # type: ignore[arg-type]
        assert red(out.getpixel((203, y))), y  # type: ignore[arg-type]
    for x in (118, 160, 200):
        assert red(out.getpixel((x, 1))), x  # type: ignore[arg-type]
        assert red(out.getpixel((x, 178))), x  # type: ignore[arg-type]
    assert not red(out.getpixel((160, 90)))  # type: ignore[arg-type]
    # beside it: the image again, blurred and darkened (not black bars)
    side = ImageStat.Stat(out.crop((0, 20, 100, 160))).mean
    assert 5 < max(side) < 200


def test_fit_over_blur_inside_a_box() -> None:
    out = fit_over_blur(bordered((400, 100), 6), (320, 180), box=(40, 20, 280, 160))
    left, top, right, bottom = red_extent(out)
    assert (left, right) == (40, 279)  # 240 wide: the whole width of the box
    assert top >= 20
    assert bottom <= 159


def kinds(pixels: list[tuple[int, ...]]) -> str:
    """The red (``r``) and green (``g``) runs along a line of pixels, e.g. ``"rgr"``."""
    out = ""
    for pixel in pixels:
        r, g, b = pixel[:3]
        kind = "r" if red(pixel) else "g" if g > 140 and r < 90 and b < 120 else ""
        if kind and not out.endswith(kind):
            out += kind
    return out


def test_a_tall_first_frame_is_shown_whole_through_the_camera_move(tmp_path: Path) -> None:
    image = tmp_path / "tall.png"
    bordered((300, 600), 24).save(image)
    spec = ClipSpec(
        title="x", prompt="", duration_s=2, width=320, height=180, fps=12, image=image, seed=3
    )
    clip = tmp_path / "clip.mp4"
    render_clip(spec, clip)
    shots = frames(clip)
    assert len(shots) == 24
    for index in (14, 18, 23):  # after the title card's dissolve, to the end of the push-in
        frame = shots[index].convert("RGB")
        left, _, right, _ = red_extent(frame.crop((0, 0, 320, 150)))  # above the burn-in
        assert 40 < right - left < 120, index  # a tall picture, not the whole width
        middle_x, middle_y = (left + right) // 2, 70
        column = [frame.getpixel((middle_x, y)) for y in range(180)]
        row = [frame.getpixel((x, middle_y)) for x in range(320)]
        # red border, green inside, red border: top and bottom, left and right all in view
        assert kinds(column) == "rgr", (index, kinds(column))  # type: ignore[arg-type]
        assert kinds(row) == "rgr", (index, kinds(row))  # type: ignore[arg-type]
    last = shots[-1].convert("RGB")  # the end of the move: the whole height, edge to edge
    left, _, right, _ = red_extent(last.crop((0, 0, 320, 150)))
    column = [red(last.getpixel(((left + right) // 2, y))) for y in range(180)]  # type: ignore[arg-type]
    assert any(column[:4])
    assert any(column[-4:])


def test_a_first_frame_of_the_shots_aspect_still_covers_the_frame(tmp_path: Path) -> None:
    image = tmp_path / "wide.png"
    bordered((640, 360), 80).save(image)
    spec = ClipSpec(
        title="x", prompt="", duration_s=2, width=320, height=180, fps=12, image=image, seed=3
    )
    clip = tmp_path / "clip.mp4"
    render_clip(spec, clip)
    frame = frames(clip)[14]  # the move has barely started: the border reaches every edge
    for xy in ((1, 90), (318, 90), (160, 1)):
        assert red(frame.getpixel(xy)), xy  # type: ignore[arg-type]
