"""One home for prices: `pipeline plan` and the run's spend guard agree on every shot."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.test_cli import checkpoint_events, cli

#: No provider keys: prices come from the simulators and the manifest only.
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}

MANIFEST = """\
version: 1
name: prices
budget: {max_usd: 100}
providers:
  seedance2: {usd_per_credit: 0.01}
  newapi: {prices: {viduq3p-720p: {per_second_usd: 0.07}}}
scenes:
  - id: a
    shots:
      - {id: quoted, provider: venice, model: wan-2-7-text-to-video, duration: 5, prompt: q}
      - {id: credits, provider: seedance2, model: seedance-2.0, duration: 5, prompt: c}
      - {id: table, provider: newapi, model: viduq3p-720p, duration: 4, prompt: t}
      - {id: unknown, provider: relaydance, model: doubao-seedance-2-0-720p, duration: 5,
         prompt: u}
"""


def test_plan_and_run_agree_on_quote_credits_price_table_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    plan = cli("plan", "m.yaml", "--simulate", "--json", cwd=tmp_path, env=ENV)
    assert plan.returncode == 0, plan.stderr
    planned = {s["id"]: s for s in json.loads(plan.stdout)["shots"]}
    assert {i: s["source"] for i, s in planned.items()} == {
        "a-quoted": "quote",
        "a-credits": "credits",
        "a-table": "price table",
        "a-unknown": "unknown",
    }
    assert planned["a-credits"]["credits"] == 40  # the documented 40 credits for 5 s T2V 720p
    assert planned["a-credits"]["usd"] == 0.4
    assert planned["a-table"]["usd"] == 0.28
    assert planned["a-unknown"]["usd"] is None
    assert planned["a-quoted"]["usd"] > 0

    run = cli("run", "m.yaml", "--simulate", "--no-progress", cwd=tmp_path, env=ENV)
    assert run.returncode == 1, run.stderr  # the unpriced shot is held back
    events = checkpoint_events(tmp_path / "jobs" / "prices")
    intents = {e["shot"]: e["est_usd"] for e in events if e["ev"] == "submit_intent"}
    held = {e["shot"]: e["why"] for e in events if e["ev"] == "submit_held"}
    for sid in ("a-quoted", "a-credits", "a-table"):
        assert intents[sid] == planned[sid]["usd"], sid
    assert held == {"a-unknown": "price unknown"}
    assert "a-unknown" not in intents

    status = cli("status", "jobs/prices", cwd=tmp_path, env=ENV).stdout
    (line,) = [ln for ln in status.splitlines() if ln.startswith("a-unknown")]
    assert "pending (price unknown)" in line
    doc = json.loads(cli("status", "jobs/prices", "--json", cwd=tmp_path, env=ENV).stdout)
    assert {s["id"]: s["held"] for s in doc["shots"]}["a-unknown"] == "price unknown"


def test_plan_never_says_unknown_prices_fit_a_budget(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: u\nscenes:\n  - id: a\n    shots:\n"
        "      - {id: s1, provider: relaydance, model: doubao-seedance-2-0-720p, duration: 5, "
        "prompt: x}\n"
    )
    res = cli("plan", "m.yaml", "--max-usd", "0.01", cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    assert "price unknown" in res.stdout
    assert "cannot tell whether the plan fits: 1 shot(s) have no price" in res.stdout
    assert ": the plan fits" not in res.stdout
