"""The manifest reader: PyYAML's own data with file:line errors, pinned fingerprints, memory."""

from __future__ import annotations

import base64
import gc
import tracemalloc
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest.loader import load_manifest, read_yaml

H = "version: 1\nname: t\n"
SHOT = "scenes:\n  - id: a\n    shots:\n      - id: s1\n        prompt: hi\n"

#: Valid documents, most of YAML 1.1 as PyYAML reads it.
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
#: More valid documents (rare YAML), then invalid ones.
RARE = {
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
    "duplicate anchor": H + "a: &x 1\nb: &x 2\n" + SHOT,
    "undefined alias": H + "x: *nope\n" + SHOT,
    "two documents": H + SHOT + "---\nversion: 1\n",
    "syntax error": H + "scenes: [\n",
    "tab": H + "scenes:\n\t- id: a\n",
}
ALL = {**FAST, **RARE}
#: Valid YAML the manifest reader refuses on purpose (see ``pipeline.manifest.yaml_reader``), by
#: message.
REFUSED = {"recursive alias": "not valid YAML: recursive alias"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_data_and_errors_are_exactly_pyyamls(name: str) -> None:
    """Whatever PyYAML version is installed: the manifest reader adds lines, never a dialect."""
    text = ALL[name]
    if name in REFUSED:
        with pytest.raises(ManifestError) as refused:
            read_yaml(text, "m.yaml")
        assert str(refused.value).startswith(f"m.yaml:5: {REFUSED[name]}")
        return
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(ManifestError) as info:
            read_yaml(text, "m.yaml")
        (issue,) = info.value.issues
        assert (issue.file, issue.message[:14]) == ("m.yaml", "not valid YAML")
        assert issue.line is not None
        assert issue.line >= 3
        return
    data, lines = read_yaml(text, "m.yaml")
    assert repr(data) == repr(expected)  # repr: equal NaNs, and key order
    assert lines.line(("scenes",)) is not None


def test_the_rare_and_invalid_documents_cover_both_outcomes() -> None:
    outcomes = set()
    for text in RARE.values():
        try:
            yaml.safe_load(text)
            outcomes.add("valid")
        except yaml.YAMLError:
            outcomes.add("invalid")
    assert outcomes == {"valid", "invalid"}


def test_lines_come_from_the_node_marks(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    shots = "".join(f"      - {{id: s{i}, prompt: p{i}}}\n" for i in range(300))
    path.write_text(H + "scenes:\n  - id: a\n    shots:\n" + shots + "      - {id: x, take: 2}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:306: scenes[0].shots[300].prompt: required field is missing",
        f"{path}:306: scenes[0].shots[300].take: unknown field; did you mean 'takes'?; allowed: "
        "aspect_ratio, audio, consent, duration, end_image, extra, id, image, model, prompt, "
        "provider, references, resolution, seed, takes",
    ]


def test_duplicate_keys_are_reported_at_the_repeated_key() -> None:
    _, lines = read_yaml(FAST["duplicate keys"], "m.yaml")
    assert sorted(lines.duplicates) == [
        (("name",), 10),
        (("scenes", 0, "shots", 0, "extra", "a"), 9),
        (("scenes", 0, "shots", 0, "prompt"), 8),
    ]


def test_an_alias_bomb_is_walked_once_per_node() -> None:
    """Lines cost one entry per node written, not per path through the aliases.

    (About 800,000 values expanded: below the limit, so the document loads.)
    """
    levels = "".join(
        f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]\n" for i in range(1, 10)
    )
    _, lines = read_yaml(H + "l0: &l0 [x]\n" + levels + SHOT, "m.yaml")
    assert len(lines.lines) < 200


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
        f"{path}:3: defaults.duration: {allowed} (for 2 shots)",  # scene b's two shots
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
    """Peak traced memory per shot: PyYAML's node tree (~2.8 KB a shot), never a model per shot too.

    With a pydantic model per shot alive beside the tree, this was above 5 KB a shot.
    """
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
    assert peak / n < 4000, f"{peak / n:.0f} bytes per shot"


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
