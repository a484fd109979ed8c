"""The contact sheets' file names: ``contact-sheet.png``, ``contact-sheet-2.png``...

One sheet per :data:`pipeline.outputs.contact_sheet.ROWS_PER_SHEET` rows of takes.

Kept apart from the drawing code (PyAV, Pillow) so that the storyboard page and the review app
can name and find the sheets without importing it.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The first sheet (a run of up to one sheet of takes has only this one).
SHEET = "contact-sheet.png"

_NAME = re.compile(r"contact-sheet-([1-9][0-9]*)\.png")


def sheet_name(number: int) -> str:
    """The file name of sheet ``number`` (1-based): ``contact-sheet.png``, then ``-2``..."""
    return SHEET if number == 1 else f"contact-sheet-{number}.png"


def sheet_number(name: str) -> int | None:
    """The sheet number a file name ``name`` stands for (None: not a sheet's name)."""
    if name == SHEET:
        return 1
    match = _NAME.fullmatch(name)
    number = int(match.group(1)) if match else None
    return number if number is not None and number > 1 else None


def sheet_files(run_dir: Path) -> list[str]:
    """The names of the sheets in ``run_dir``, in order (stops at the first missing number)."""
    names: list[str] = []
    while (run_dir / sheet_name(len(names) + 1)).is_file():
        names.append(sheet_name(len(names) + 1))
    return names


def stale_sheets(run_dir: Path, count: int) -> list[Path]:
    """Sheet files in ``run_dir`` numbered above ``count`` (left by a larger manifest)."""
    try:
        entries = list(run_dir.iterdir())
    except FileNotFoundError:
        return []
    return [p for p in entries if (number := sheet_number(p.name)) is not None and number > count]
