"""Hostile manifests: whatever the YAML, ``pipeline validate`` answers exit 2 with file:line.

Each case runs the CLI in a subprocess under a 1 GiB address-space limit and a hang guard:
an alias bomb that made validation walk billions of values, a recursive alias, nesting 990
deep, integers of 6,000 digits, bytes that are not UTF-8, a NUL byte, a provider URL that is
not http(s).
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

H = "version: 1\nname: t\n"
SHOT = "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: hi\n"
#: A subprocess must answer well within this (a guard against hangs, not a timing claim).
HANG_GUARD_S = 60
MEMORY_LIMIT = 1024**3


def bomb(indent: str = "", first: str = "b") -> str:
    """Nine anchored lists of nine aliases each: 9**9 (387 million) values once expanded."""
    lines = [f"{indent}{first}0: &b0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"{indent}b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def shot(*fields: str) -> str:
    return SHOT + "".join(f"        {f}\n" for f in fields)


CASES: dict[str, tuple[str | bytes, int, str]] = {
    # name: (manifest, line reported, words of the message)
    "billion laughs in extra": (
        H + SHOT + "        extra:\n" + bomb("          "),
        15,
        "aliases expand to more than 1,000,000 values",
    ),
    "billion laughs in vars": (
        H + "vars:\n" + bomb("  ") + SHOT,
        10,
        "aliases expand to more than 1,000,000 values",
    ),
    "billion laughs in a top-level key": (
        H + bomb() + "bomb: *b9\n" + SHOT,
        9,
        "aliases expand to more than 1,000,000 values",
    ),
    "billion laughs as a key": (
        H + bomb() + "*b9 : 1\n" + SHOT,
        9,
        "aliases expand to more than 1,000,000 values",
    ),
    "billion laughs where there is an error too": (
        H
        + "x: &b0 [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"x{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]\n" for i in range(1, 10))
        + SHOT
        + "        duration: *b9\n",
        9,
        "aliases expand to more than 1,000,000 values",
    ),
    "recursive alias": (H + "extra: &r {again: *r}\n" + SHOT, 3, "recursive alias"),
    "990 levels": (H + "x: " + "[" * 990 + "]" * 990 + "\n" + SHOT, 3, "nested deeper than 100"),
    "6,000-digit duration": (H + shot("duration: " + "9" * 6000), 8, "an integer of 6000"),
    "6,000-digit seed": (H + shot("seed: " + "1" * 6000), 8, "an integer of 6000"),
    "6,000-digit integer in extra": (
        H + shot("extra: {n: " + "7" * 6000 + "}"),
        8,
        "an integer of 6000",
    ),
    "hexadecimal integer of 6,000 digits in extra": (
        H + shot("extra:", "  n: 0x" + "f" * 6000),
        9,
        "an integer of 6002",
    ),
    "impossible date": (H + shot("extra: {d: 2024-13-45}"), 8, "month must be in 1..12"),
    "not UTF-8": ((H + SHOT).encode() + b"        extra: {a: '\xe9t\xe9'}\n", 8, "not valid UTF-8"),
    "NUL byte": (H + shot("extra: {a: 'x\x00y'}"), 8, "control character #x0000 at column 22"),
    "base_url file:///etc/passwd": (
        H + "providers:\n  local: {base_url: 'file:///etc/passwd'}\n" + SHOT,
        4,
        "providers.local.base_url: Value error, must be an http:// or https:// URL",
    ),
    "storage endpoint_url file:": (
        H + "storage: {url: 's3://b/p', endpoint_url: 'file:///etc'}\n" + SHOT,
        3,
        "storage.endpoint_url: Value error, must be an http:// or https:// URL",
    ),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        preexec_fn=_limit_memory,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_manifest_is_refused_at_its_line(name: str, tmp_path: Path) -> None:
    text, line, words = CASES[name]
    path = tmp_path / "m.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    done = validate(path)
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert f"{path}:{line}: " in done.stderr, done.stderr
    assert words in done.stderr


def test_a_bomb_below_the_limit_still_loads(tmp_path: Path) -> None:
    """Aliases are fine as long as they expand to less than the limit (here 6 levels of 9)."""
    levels = bomb("  ").splitlines()[:6]
    path = tmp_path / "m.yaml"
    path.write_text(H + "defaults:\n  extra:\n" + "\n".join("  " + x for x in levels) + "\n" + SHOT)
    done = validate(path)
    assert done.returncode == 0, done.stderr
    assert "1 shot(s)" in done.stdout


def test_problems_beyond_a_thousand_are_counted(tmp_path: Path) -> None:
    shots = "".join(f"      - {{id: s{i}, prompt: p, duration: 0}}\n" for i in range(1500))
    path = tmp_path / "m.yaml"
    path.write_text(H + "scenes:\n  - id: a\n    shots:\n" + shots)
    done = validate(path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "invalid input:"
    assert len(lines) == 1 + 1000 + 1
    assert lines[1].startswith(f"{path}:6: scenes[0].shots[0].duration: ")
    assert lines[-1] == f"{path}: ... and 500 more problems"


def test_the_run_command_refuses_them_too(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(H + SHOT + "        extra:\n" + bomb("          "))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(path), "--jobs-dir", str(tmp_path / "j")],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        preexec_fn=_limit_memory,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert re.search(rf"{re.escape(str(path))}:15: not valid YAML: aliases expand", done.stderr)
    assert not (tmp_path / "j").exists()
