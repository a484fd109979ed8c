"""The manifest reader: PyYAML's data and lines without a node tree, pinned fingerprints, memory."""

from __future__ import annotations

import base64
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pipeline import yaml_reader
from pipeline.errors import ManifestError
from pipeline.manifest import LineMap, load_manifest, read_yaml

H = "version: 1\nname: t\n"
SHOT = "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: hi\n"

#: Documents the fast reader reads itself (no node tree).
FAST = {
    "block and flow": H + SHOT + "      - {id: s2, prompt: 'x', takes: 2}\n",
    "implicit types": H
    + "defaults: {duration: 0x5, audio: off, seed: 0o17}\nx: [yes, No, ON, ~, null, '', 1_0, "
    "010, 0b11, 1:30, .inf, -.Inf, .NaN, 6.8e+5, 2024-01-02, 2001-12-14 21:59:43.10 -5, "
    "'12', \"yes\", ! 12, !!str 5, !!int '4', !!float 1, !!binary aGk=, !!null '']\n" + SHOT,
    "keys": H + "extra: {'': 1, ' sp': 2, 'true': 3, 1: 4, yes: 5, ~: 6, =: 7, 1.5: 8}\n" + SHOT,
    "block scalars": H + "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: |\n"
    "          one\n          two\n      - id: s2\n        prompt: >\n          folded\n"
    "          text\n",
    "anchors and aliases": H + "defaults: &d {duration: 3}\nscenes:\n  - id: a\n"
    "    defaults: *d\n    shots: &l\n      - &x {id: s1, prompt: x, extra: &e {k: [1]}}\n"
    "      - {id: s2, prompt: y, extra: *e}\n  - id: b\n    shots: *l\n  - id: c\n"
    "    shots: [*x]\n",
    "merge keys": H + "defaults: &d {duration: 3}\nscenes:\n  - id: a\n    shots:\n"
    "      - {<<: *d, id: s1, prompt: x}\n      - {<<: [*d, {seed: 4}], id: s2, prompt: x}\n"
    "      - <<: {prompt: merged}\n        id: s3\n      - {<<: {duration: 2}, id: s4, "
    "<<: {seed: 3}, prompt: y}\n      - <<: &l [{takes: 2}, {audio: false}]\n"
    "        id: s5\n        prompt: z\n      - {<<: *l, id: s6, prompt: w}\n",
    "merge keys in an anchor": H + "defaults: &a {duration: 3}\nscenes:\n  - id: a\n"
    "    defaults: &b {<<: *a, audio: false}\n    shots:\n      - {<<: *b, id: s1, prompt: x}\n",
    "explicit tags": H + "scenes: !!seq\n  - !!map {!!str id: a, shots: [{id: s1, prompt: x, "
    "!!merge <<: {seed: 2}}]}\n",
    "question keys": H + "scenes:\n  - id: a\n    shots:\n      - ? id\n        : s1\n"
    "        ? prompt\n        : x\n",
    "documents marks": "%YAML 1.1\n---\n" + H + SHOT + "...\n# end\n",
    "crlf and bom": "\ufeff" + (H + SHOT).replace("\n", "\r\n"),
    "unicode": H + "vars: {who: 'Mára ☂'}\n" + SHOT.replace("hi", "'été {{ who }} 日本'"),
    "merge overrides (duplicate keys)": H + "scenes:\n  - id: a\n    shots:\n"
    "      - &s1 {id: s1, prompt: hi, duration: 3}\n      - <<: *s1\n        id: s2\n",
    "duplicate keys": H + SHOT + "        prompt: again\n        extra: {a: 1, a: 2}\nname: u\n",
    "same text, other types": H + "extra: {'1': 2, 1: 3}\n" + SHOT,
}
#: Documents left to PyYAML's loader (rare YAML, or not valid).
PYYAML = {
    "recursive alias": H + "scenes: &r\n  - id: a\n    shots: *r\n",
    "custom tag": H + "x: !custom 1\n" + SHOT,
    "set": H + "x: !!set {a, b}\n" + SHOT,
    "omap": H + "x: !!omap [a: 1]\n" + SHOT,
    "complex key": H + "? [a]\n: 1\n" + SHOT,
    "anchored key": H + "&k x: 1\n" + SHOT,
    "alias as key": H + "k: &k x\n*k : 1\n" + SHOT,
    "merge of a scalar": H + "x: {<<: 3}\n" + SHOT,
    "merge of a list of scalars": H + "x: {<<: [3]}\n" + SHOT,
    "merge key as a value": H + "x: <<\n" + SHOT,
    "value key as a value": H + "x: =\n" + SHOT,
    "undefined alias": H + "x: *nope\n" + SHOT,
    "duplicate anchor": H + "a: &x 1\nb: &x 2\n" + SHOT,
    "two documents": H + SHOT + "---\nversion: 1\n",
    "syntax error": H + "scenes: [\n",
    "tab": H + "scenes:\n\t- id: a\n",
}


def _pyyaml(text: str) -> tuple[Any, LineMap]:
    """What the loader did before the fast reader: PyYAML's tree, constructed, then walked."""
    root, data = yaml_reader._compose_and_construct(text)
    lines = LineMap()
    lines.walk(root)
    return data, lines


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_reader_gives_pyyaml_data_and_lines(name: str) -> None:
    text = FAST[name]
    data, lines = _pyyaml(text)
    reader = yaml_reader._Reader(yaml_reader._LOADER(text))
    reader.read()
    assert repr(reader.root) == repr(data)  # repr: equal NaNs, and key order
    assert reader.duplicates == bool(lines.duplicates)
    got, fast = read_yaml(text, "m.yaml")
    assert repr(got) == repr(data)
    assert fast.duplicates == lines.duplicates
    every = {*lines.lines, *((*loc, "nope") for loc in lines.lines), ("nope", 3)}
    fast.resolve(every)
    assert {loc: fast.line(loc) for loc in every} == {loc: lines.line(loc) for loc in every}


@pytest.mark.parametrize("name", sorted(PYYAML))
def test_rare_or_invalid_yaml_is_left_to_pyyaml(name: str) -> None:
    assert yaml_reader._read_fast(PYYAML[name]) is None


def test_plain_documents_need_no_tree_even_for_error_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shots = "".join(f"      - {{id: s{i}, prompt: p{i}}}\n" for i in range(300))
    path = tmp_path / "m.yaml"
    path.write_text(H + "scenes:\n  - id: a\n    shots:\n" + shots + "      - {id: x, take: 2}\n")

    def no_tree(text: str) -> Any:
        raise AssertionError("PyYAML's node tree was built")

    monkeypatch.setattr(yaml_reader, "_compose_and_construct", no_tree)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:306: scenes[0].shots[300].prompt: required field is missing",
        f"{path}:306: scenes[0].shots[300].take: unknown field; did you mean 'takes'?; allowed: "
        "aspect_ratio, audio, consent, duration, end_image, extra, id, image, model, prompt, "
        "provider, references, resolution, seed, takes",
    ]


def test_lines_of_merged_and_aliased_values_are_where_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        H + "defaults: &a {duration: 45}\nscenes:\n  - id: a\n    shots:\n"
        "      - {<<: *a, id: s1, prompt: x}\n      - <<: *a\n        id: s2\n        prompt: y\n"
        "  - id: b\n    shots: [{id: s1, prompt: x}, {id: s2, prompt: y, extra: {a: *a}}]\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    allowed = "45 s is not allowed for local/previz (allowed: 1-30)"
    assert [str(i) for i in info.value.issues] == [
        f"{path}:3: defaults.duration: {allowed}",  # scene b's two shots
        f"{path}:3: defaults.duration: {allowed}",
        f"{path}:3: scenes[0].shots[0].duration: {allowed}",
        f"{path}:3: scenes[0].shots[1].duration: {allowed}",
    ]


#: A 1x1 PNG, as fixed bytes (its hash is part of the fingerprint).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYGAAAAAEAAH2FzhVAAAAAElFTkSuQmCC"
)


def test_fingerprints_seeds_and_lines_are_pinned(tmp_path: Path) -> None:
    """Checkpoints of existing runs store these: a change would make every shot look edited."""
    (tmp_path / "one.png").write_bytes(PNG)
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nname: pinned\ndefaults: {duration: 3, extra: {style: ink}}\n"
        "vars: {who: a fisherwoman}\nscenes:\n  - id: harbor\n"
        '    defaults: {aspect_ratio: "9:16"}\n    shots:\n      - id: s01\n'
        '        prompt: "{{ who }} mends a net"\n        image: one.png\n        takes: 2\n'
        "      - {id: s02, prompt: plain, seed: 7, resolution: 480p, "
        "extra: {style: oil, n: 1}}\n"
    )
    got = [(s.id, s.seed, s.line, s.fingerprint) for s in load_manifest(path).shots]
    assert got == [
        (
            "harbor-s01-t1",
            1522117722,
            9,
            "sha256:a2b993cf8a52a98c11ea94cb97396af0ace29affd6a921afe23e6ad1814145b9",
        ),
        (
            "harbor-s01-t2",
            1047757821,
            9,
            "sha256:a74b9e9b98c780fd4414da4ffd739b3892b8f161598bb16e2589635b373fdd5c",
        ),
        (
            "harbor-s02",
            7,
            13,
            "sha256:e658ed35fd126d7f8e4f9ae4536c0c287e18b5634e79f134d54154ddd51ca024",
        ),
    ]


def test_a_big_manifest_is_loaded_shot_by_shot(tmp_path: Path) -> None:
    """Peak traced memory per shot: about 3 KB when a node tree and a model per shot coexisted."""
    n = 4000
    shots = "".join(f"      - {{id: s{i:06d}, prompt: 'shot {i}'}}\n" for i in range(n))
    path = tmp_path / "m.yaml"
    path.write_text(H + "scenes:\n  - id: a\n    shots:\n" + shots)
    tracemalloc.start()
    try:
        loaded = load_manifest(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(loaded.shots) == n
    assert loaded.shots[-1].line == n + 5
    assert peak / n < 1200, f"{peak / n:.0f} bytes per shot"


def test_loading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(H + SHOT)
    assert gc.isenabled()
    load_manifest(path)
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(ManifestError):
            load_manifest(tmp_path / "missing.yaml")
        path.write_text(H + SHOT + "        bogus: 1\n")
        with pytest.raises(ManifestError):
            load_manifest(path)
        assert not gc.isenabled()
    finally:
        gc.enable()
