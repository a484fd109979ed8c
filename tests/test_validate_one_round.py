"""`pipeline validate` reports every problem of a manifest in one round, each with file:line."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import cli

MANIFEST = """\
version: 1
name: rounds
budget: {max_usd: lots}
storage: {url: "s3://b/p", presign_ttl: 'forever and ever'}
providers:
  venice: {max_in_flight: -1}
vars: {who: [not, text]}
scenes:
  - id: a
    shots:
      - {id: s1, prompt: x, duration: 99, provider: local}
      - {id: s2, prompt: "{{ nope }} and {{ who }}", provider: local}
      - {id: s3, provider: local}
  - id: b
    bogus: 1
    shots:
      - {id: s1, prompt: y, provider: venice, model: wan-2-7-text-to-video, duration: 7}
"""


def test_head_shot_and_capability_problems_come_in_one_report(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    res = cli("validate", "m.yaml", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.splitlines()[1:]
    fields = [line.split(": ", 2)[:2] for line in lines]
    assert fields == [
        ["m.yaml:3", "budget.max_usd"],
        ["m.yaml:4", "storage.presign_ttl"],
        ["m.yaml:6", "providers.venice.max_in_flight"],
        ["m.yaml:7", "vars.who"],
        ["m.yaml:11", "scenes[0].shots[0].duration"],
        ["m.yaml:12", "scenes[0].shots[1].prompt"],
        ["m.yaml:13", "scenes[0].shots[2].prompt"],
        ["m.yaml:15", "scenes[1].bogus"],
        ["m.yaml:17", "scenes[1].shots[0].duration"],
    ], res.stderr
    # The invalid var is reported once, where it is defined, not again as unknown.
    assert lines[5].endswith("prompt: unknown var {{ nope }} (defined in vars: who)")
    assert "is not a duration" in lines[1]
    assert "Traceback" not in res.stderr
