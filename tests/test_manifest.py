"""Manifest loading: expansion rules, and a file:line:field error for every kind of bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import ManifestError
from pipeline.manifest.loader import load_manifest
from pipeline.models import MediaRole

HEAD = "version: 1\nname: t\n"


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    Image.new("RGB", (32, 18), (10, 20, 30)).save(tmp_path / "frame.png")
    (tmp_path / "fake.png").write_bytes(b"this is text, not an image\n")
    (tmp_path / "notes.txt").write_text("hello")
    path = tmp_path / name
    path.write_text(text)
    return path


def issues_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, strict=True)  # strict: an unknown model is an error too
    return [str(i) for i in info.value.issues]


GOOD = (
    HEAD
    + """defaults:
  duration: 3
vars:
  mara: a fisherwoman
scenes:
  - id: harbor
    defaults: {aspect_ratio: "9:16"}
    shots:
      - id: s01
        prompt: "{{ mara }} mends a net"
        image: frame.png
        takes: 3
      - id: s02
        prompt: "{{mara}} again"
        duration: 4
        aspect_ratio: "1:1"
        seed: 100
        takes: 2
"""
)


def test_expansion_merges_defaults_vars_takes_and_media(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, GOOD))
    assert [s.id for s in m.shots] == [
        "harbor-s01-t1",
        "harbor-s01-t2",
        "harbor-s01-t3",
        "harbor-s02-t1",
        "harbor-s02-t2",
    ]
    first = m.shots[0]
    assert first.prompt == "a fisherwoman mends a net"
    assert (first.provider, first.model, first.duration, first.aspect_ratio) == (
        "local",
        "previz",
        3,
        "9:16",
    )
    assert first.image is not None
    assert first.image.role == MediaRole.IMAGE
    assert first.image.path == (tmp_path / "frame.png").resolve()
    assert first.image.mime == "image/png"
    seeds = [s.seed for s in m.shots[:3]]
    assert len(set(seeds)) == 3  # distinct recorded seeds per take
    assert len({s.fingerprint for s in m.shots}) == 5
    assert [s.seed for s in m.shots[3:]] == [100, 101]
    assert (m.shots[3].duration, m.shots[3].aspect_ratio) == (4, "1:1")
    assert m.shots[3].prompt == "a fisherwoman again"
    # Loading twice gives the same fingerprints (seeds are derived, not random).
    assert [s.fingerprint for s in load_manifest(tmp_path / "m.yaml").shots] == [
        s.fingerprint for s in m.shots
    ]


def test_fingerprint_follows_media_content(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    before = load_manifest(path).shots[0].fingerprint
    Image.new("RGB", (32, 18), (99, 20, 30)).save(tmp_path / "frame.png")
    assert load_manifest(path).shots[0].fingerprint != before


SHOT = "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: hi\n"

# (name, manifest text, line, field, words the message must contain)
BAD: list[tuple[str, str, int, str, str]] = [
    (
        "unknown key",
        HEAD + SHOT + "        durration: 3\n",
        8,
        "scenes[0].shots[0].durration",
        "did you mean 'duration'",
    ),
    (
        "wrong type",
        HEAD + SHOT + "        duration: five\n",
        8,
        "scenes[0].shots[0].duration",
        "valid integer",
    ),
    (
        "unquoted ratio",
        HEAD + SHOT + "        aspect_ratio: 16:9\n",
        8,
        "scenes[0].shots[0].aspect_ratio",
        "in quotes",
    ),
    (
        "missing prompt",
        HEAD + "scenes:\n  - id: a\n    shots:\n      - id: s1\n",
        6,
        "scenes[0].shots[0].prompt",
        "required",
    ),
    (
        "missing file",
        HEAD + SHOT + "        image: nope.png\n",
        8,
        "scenes[0].shots[0].image",
        "no such file",
    ),
    (
        "wrong media type",
        HEAD + SHOT + "        image: fake.png\n",
        8,
        "scenes[0].shots[0].image",
        "not an image, video or audio",
    ),
    (
        "duplicate id",
        HEAD + SHOT + "      - id: s1\n        prompt: again\n",
        8,
        "scenes[0].shots[1].id",
        "used twice",
    ),
    (
        "unknown var",
        HEAD + "scenes:\n  - id: a\n    shots:\n      - id: s1\n"
        "        prompt: 'see {{ nobody }}'\n",
        7,
        "scenes[0].shots[0].prompt",
        "unknown var",
    ),
    (
        "unknown provider",
        HEAD + SHOT + "        provider: sora9\n",
        8,
        "scenes[0].shots[0].provider",
        "known: local",
    ),
    (
        "unknown model",
        HEAD + "defaults:\n  model: hd\n" + SHOT,
        4,
        "defaults.model",
        "unknown model 'hd'",
    ),
    (
        "duration above caps",
        HEAD + SHOT + "        duration: 45\n",
        8,
        "scenes[0].shots[0].duration",
        "allowed: 1-30",
    ),
    (
        "ratio not allowed",
        HEAD + SHOT + "        aspect_ratio: '7:3'\n",
        8,
        "scenes[0].shots[0].aspect_ratio",
        "not allowed for local/previz",
    ),
    (
        "bad resolution",
        HEAD + SHOT + "        resolution: 8k\n",
        8,
        "scenes[0].shots[0].resolution",
        "allowed: 240p",
    ),
    ("bad version", "version: 2\nname: t\n" + SHOT, 1, "version", "Input should be 1"),
    ("bad name", "version: 1\nname: ../etc\n" + SHOT, 2, "name", "not allowed"),
    (
        "duplicate key",
        HEAD + SHOT + "        prompt: twice\n",
        8,
        "scenes[0].shots[0].prompt",
        "duplicate key",
    ),
    (
        "takes zero",
        HEAD + SHOT + "        takes: 0\n",
        8,
        "scenes[0].shots[0].takes",
        "greater than or equal to 1",
    ),
    (
        "too many references",
        HEAD + SHOT + "        references: [frame.png, frame.png, frame.png,"
        " frame.png, frame.png]\n",
        8,
        "scenes[0].shots[0].references",
        "at most 4",
    ),
    (
        "text file as reference",
        HEAD + SHOT + "        references: [notes.txt]\n",
        8,
        "scenes[0].shots[0].references[0]",
        "not an image, video or audio",
    ),
    (
        "remote media for local",
        HEAD + SHOT + "        image: https://example.com/a.png\n",
        8,
        "scenes[0].shots[0].image",
        "offline",
    ),
    (
        "unknown provider settings",
        HEAD + "providers:\n  runway: {max_in_flight: 2}\n" + SHOT,
        4,
        "providers.runway",
        "unknown provider",
    ),
    (
        "bad provider setting",
        HEAD + "providers:\n  local: {max_in_flight: 0}\n" + SHOT,
        4,
        "providers.local.max_in_flight",
        "greater than 0",
    ),
    ("empty scenes", HEAD + "scenes: []\n", 3, "scenes", "at least 1"),
    (
        "bad consent",
        HEAD + SHOT + "        consent: yes\n",
        8,
        "scenes[0].shots[0].consent",
        "'seedance'",
    ),
    (
        "data url",
        HEAD + SHOT + "        image: 'data:image/png;base64,AAAA'\n",
        8,
        "scenes[0].shots[0].image",
        "data: URLs",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_manifest_names_file_line_field(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    issues = issues_of(path)
    wanted = f"{path}:{line}: {field}: "
    match = [i for i in issues if i.startswith(wanted)]
    assert match, f"no issue starting with {wanted!r} in {issues}"
    assert words in match[0], match[0]


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "scenes:\n  - id: a\n    shots: [\n")
    (issue,) = issues_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: not valid YAML", issue)


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        HEAD
        + SHOT
        + "        duration: 45\n        image: nope.png\n      - id: s1\n        prompt: x\n"
    )
    issues = issues_of(write(tmp_path, text))
    assert len(issues) == 3
    assert any("duration" in i for i in issues)
    assert any("no such file" in i for i in issues)
    assert any("used twice" in i for i in issues)


def test_validate_command_exits_2_and_lists_every_issue(tmp_path: Path) -> None:
    text = HEAD + SHOT + "        duration: 45\n        resolution: 8k\n"
    path = write(tmp_path, text)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert res.returncode == 2
    assert f"{path}:8: scenes[0].shots[0].duration" in res.stderr
    assert f"{path}:9: scenes[0].shots[0].resolution" in res.stderr


def _wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return path


R2V = (
    HEAD
    + "defaults: {provider: venice, model: seedance-2-0-reference-to-video, duration: 5}\n"
    + "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: hi\n"
)


def test_media_limits_of_the_model_are_checked_offline(tmp_path: Path) -> None:
    Image.new("RGB", (200, 150)).save(tmp_path / "small.png")
    Image.new("RGB", (1200, 300)).save(tmp_path / "wide.png")
    Image.new("RGB", (640, 480)).save(tmp_path / "ok.png")
    _wav(tmp_path / "long.wav", 31)
    _wav(tmp_path / "short.wav", 3)
    refs = "[small.png, wide.png, ok.png, long.wav, short.wav]"
    path = write(tmp_path, R2V + f"        references: {refs}\n")
    issues = issues_of(path)
    where = f"{path}:9: scenes[0].shots[0].references"
    assert any(i.startswith(f"{where}[0]: small.png is 200x150") and "300 px" in i for i in issues)
    assert any(i.startswith(f"{where}[1]: wide.png has aspect 4.00") for i in issues)
    assert any(i.startswith(f"{where}[3]: long.wav lasts 31.0 s") for i in issues)
    assert len(issues) == 3  # ok.png and short.wav pass


def test_wrong_type_behind_a_correct_extension_is_caught(tmp_path: Path) -> None:
    _wav(tmp_path / "voice.png", 1)  # audio named .png
    path = write(
        tmp_path, R2V.replace("reference-to-video", "image-to-video") + "        image: voice.png\n"
    )
    issues = issues_of(path)
    assert any("voice.png is audio/wav, but a frame must be an image" in i for i in issues)
