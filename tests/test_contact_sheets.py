"""Contact sheets of a run too large for one: split by rows into ``contact-sheet.png``,
``contact-sheet-2.png``... each redrawn only when something on it changed, linked from the
storyboard page and served by the review app; sheets left by a larger manifest are removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageStat

from pipeline.manifest.loader import load_manifest
from pipeline.outputs import contact_sheet
from pipeline.outputs.cache import OutputCache
from pipeline.outputs.contact_sheet import (
    ACCENT,
    BACKGROUND,
    THUMB_H,
    sheet_layouts,
    write_contact_sheet,
)
from pipeline.outputs.drawing import MISSING_FILL
from pipeline.outputs.storyboard import PAGE, write_storyboard
from tests.local_runs import Run, finished_run

MANIFEST = """\
version: 1
name: sheets
defaults: {provider: local, duration: 1, aspect_ratio: "16:9"}
providers: {local: {latency_s: 0}}
scenes:
  - id: one
    shots:
      - {id: a, prompt: "Wide: the pier at dawn", image: pier.png}
      - {id: b, prompt: "The lighthouse", takes: 2, seed: 5}
  - id: two
    shots:
      - {id: c, prompt: "Gulls over the harbor", seed: 9}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return finished_run(tmp_path_factory.mktemp("sheets"), MANIFEST, "sheets")


def sheets_of(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("contact-sheet*.png"))


def test_a_run_of_more_rows_than_a_sheet_gets_one_sheet_per_rows(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contact_sheet, "ROWS_PER_SHEET", 1)
    picks = {"one-b": 2}
    first = write_contact_sheet(run.run_dir, run.manifest, run.state, picks=picks, columns=2)
    assert first == run.run_dir / "contact-sheet.png"
    names = ["contact-sheet-2.png", "contact-sheet-3.png", "contact-sheet.png"]
    assert sheets_of(run.run_dir) == names
    layouts = sheet_layouts(run.manifest, 2, 1)
    # scene one's three takes fill a row and go on over the next sheet; scene two has its own
    assert [[s.id for s in lay.shots] for lay in layouts] == [
        ["one-a", "one-b-t1"],
        ["one-b-t2"],
        ["two-c"],
    ]
    assert [sorted(lay.continued) for lay in layouts] == [[], ["one"], []]
    for layout in layouts:
        name = "contact-sheet.png" if layout.number == 1 else f"contact-sheet-{layout.number}.png"
        with Image.open(run.run_dir / name) as img:
            sheet = img.convert("RGB")
        assert sheet.size == layout.size
        assert layout.size[1] < MARGIN_PLUS_ONE_ROW
        for shot in layout.shots:  # each take's poster is on its own sheet
            cell = sheet.crop(layout.cells[shot.id])
            assert ImageStat.Stat(cell).stddev[0] > 3, shot.id
        if "one-b-t2" in layout.cells:  # the picked take is framed where it is
            left, top, _, _ = layout.cells["one-b-t2"]
            assert sheet.getpixel((left - 2, top + 20)) == ACCENT
    with Image.open(run.run_dir / "contact-sheet.png") as img:
        left, top, _, _ = layouts[0].cells["one-b-t1"]
        assert img.convert("RGB").getpixel((left - 2, top + 20)) == BACKGROUND


#: A sheet of one row: the title, a scene header and one row of cells, with margins.
MARGIN_PLUS_ONE_ROW = 28 + 78 + 44 + THUMB_H + 46 + 18 + 28


def test_a_change_redraws_only_the_sheet_it_is_on(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contact_sheet, "ROWS_PER_SHEET", 1)
    write_contact_sheet(run.run_dir, run.manifest, run.state, columns=2)
    before = {n: (run.run_dir / n).read_bytes() for n in sheets_of(run.run_dir)}
    cache = OutputCache(run.run_dir)
    picks = {"one-b": 1}  # take 1 is on the first sheet
    write_contact_sheet(run.run_dir, run.manifest, run.state, picks=picks, columns=2, cache=cache)
    assert (cache.stats.written["sheet"], cache.stats.kept["sheet"]) == (1, 2)
    after = {n: (run.run_dir / n).read_bytes() for n in sheets_of(run.run_dir)}
    changed = [n for n in before if before[n] != after[n]]
    assert changed == ["contact-sheet.png"]


def test_the_page_links_every_sheet_and_a_smaller_run_drops_the_extra_ones(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contact_sheet, "ROWS_PER_SHEET", 1)
    write_contact_sheet(run.run_dir, run.manifest, run.state, columns=2)
    page = write_storyboard(run.run_dir, run.manifest, run.state).read_text()
    for number, name in enumerate(
        ["contact-sheet.png", "contact-sheet-2.png", "contact-sheet-3.png"], start=1
    ):
        assert f'href="{name}">contact sheet {number}<' in page
    monkeypatch.setattr(contact_sheet, "ROWS_PER_SHEET", 50)
    write_contact_sheet(run.run_dir, run.manifest, run.state, columns=2)
    assert sheets_of(run.run_dir) == ["contact-sheet.png"]
    page = write_storyboard(run.run_dir, run.manifest, run.state).read_text()
    assert 'href="contact-sheet.png">contact sheet<' in page
    assert "contact-sheet-2" not in page
    assert (run.run_dir / PAGE).is_file()


def test_ten_thousand_takes_make_sheets_of_bounded_size(tmp_path: Path) -> None:
    shots = "\n".join(f"      - {{id: s{i:05d}, prompt: shot {i}}}" for i in range(10_000))
    text = MANIFEST.split("scenes:")[0] + "scenes:\n  - id: big\n    shots:\n" + shots + "\n"
    (tmp_path / "m.yaml").write_text(text)
    manifest = load_manifest(tmp_path / "m.yaml")
    layouts = sheet_layouts(manifest)
    assert len(layouts) == 50
    assert {len(lay.shots) for lay in layouts} == {200}
    assert max(lay.size[1] for lay in layouts) < 12_000  # one sheet would be 565,000 px
    assert [s.id for lay in layouts for s in lay.shots] == [s.id for s in manifest.shots]
    assert all(lay.continued == {"big"} for lay in layouts[1:])


def test_a_missing_take_on_a_later_sheet_is_a_dark_card(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(contact_sheet, "ROWS_PER_SHEET", 1)
    (tmp_path / "shots").mkdir()  # no videos here: every take's file is missing
    write_contact_sheet(tmp_path, run.manifest, run.state, columns=2)
    layout = sheet_layouts(run.manifest, 2, 1)[2]
    left, top, _, _ = layout.cells["two-c"]
    with Image.open(tmp_path / "contact-sheet-3.png") as img:
        fill = img.convert("RGB").getpixel((left + 2, top + 2))
    assert fill == MISSING_FILL.get("file not found", (36, 37, 44))


def test_a_directory_planted_under_a_stale_sheets_name_is_left_and_said(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "shots").symlink_to(run.run_dir / "shots")
    (tmp_path / "contact-sheet-7.png").mkdir()  # not a file: never removed, never linked
    (tmp_path / "contact-sheet-3.png").write_bytes(b"left by a larger manifest")
    with caplog.at_level("WARNING", logger="pipeline"):
        write_contact_sheet(tmp_path, run.manifest, run.state)
    assert sheets_of(tmp_path) == ["contact-sheet-7.png", "contact-sheet.png"]
    assert (tmp_path / "contact-sheet-7.png").is_dir()
    assert "could not remove the stale contact sheet" in caplog.text
    page = write_storyboard(tmp_path, run.manifest, run.state).read_text()
    assert "contact-sheet-7" not in page
