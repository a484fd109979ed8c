"""``pipeline plan``: what a run would do and cost, without spending anything.

Per shot: its status against the run directory (``new``; ``changed``: the fingerprint differs;
``unchanged``: recorded, not done; ``done``; ``orphaned``: in the run directory but no longer in
the manifest) and a price estimate from, in order:

1. the provider's free quote (Venice ``/video/quote``) when an API key is set (or ``--simulate``);
2. the provider's published credit table (seedance2.ink), converted with
   ``providers.X.usd_per_credit`` when given;
3. the manifest's price table ``providers.X.prices``;
4. otherwise *unknown*: never counted as $0.

Totals (USD, shots that would run): ``low`` counts known prices only; ``expected`` adds the
unknown ones at the mean known price; ``high`` also counts failed and ambiguous shots that
``--retry-failed`` / ``--resubmit-ambiguous`` would pay for again.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipeline._util.table import text_table
from pipeline.engine import pricing
from pipeline.engine.options import RunOptions, provider_settings
from pipeline.journal.checkpoint import FILE
from pipeline.journal.snapshot import load_state
from pipeline.journal.state import RunState
from pipeline.manifest.loader import Manifest
from pipeline.models import Shot, ShotState
from pipeline.providers.base import ProviderContext, SupportsQuote

log = logging.getLogger("pipeline")

RUNS = frozenset({"new", "changed", "unchanged"})


@dataclass(frozen=True, slots=True)
class PlannedShot:
    """One line of the plan: ``status``, and the estimate with where it came from."""

    id: str
    status: str
    provider: str
    model: str
    duration: int | None
    usd: float | None = None
    credits: float | None = None
    source: str = "unknown"
    state: str | None = None


@dataclass
class Plan:
    """The whole plan and its totals (see the module docstring)."""

    shots: list[PlannedShot] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        """``{"shots_to_run", "unknown", "low_usd", "expected_usd", "high_usd", "credits"}``."""
        runs = [s for s in self.shots if s.status in RUNS and s.state != "failed"]
        known = [s.usd for s in runs if s.usd is not None]
        unknown = sum(1 for s in runs if s.usd is None)
        low = sum(known)
        mean = low / len(known) if known else 0.0
        again = [s.usd or mean for s in self.shots if s.state in ("failed", "needs_reconcile")]
        return {
            "shots_to_run": len(runs),
            "unknown": unknown,
            "low_usd": round(low, 4),
            "expected_usd": round(low + unknown * mean, 4),
            "high_usd": round(low + unknown * mean + sum(again), 4),
            "credits": sum(s.credits or 0 for s in runs),
        }

    def as_json(self) -> dict[str, Any]:
        """The plan as one JSON object: ``{"shots": [...], "totals": {...}}``."""
        shots = [
            {
                "id": s.id,
                "status": s.status,
                "state": s.state,
                "provider": s.provider,
                "model": s.model,
                "duration": s.duration,
                "usd": s.usd,
                "credits": s.credits,
                "source": s.source,
            }
            for s in self.shots
        ]
        return {"shots": shots, "totals": self.totals()}


def _status(shot: Shot, state: RunState) -> tuple[str, str | None]:
    rec = state.shots.get(shot.id)
    if rec is None:
        return "new", None
    if rec.fingerprint and rec.fingerprint != shot.fingerprint:
        return "changed", rec.state.value
    if rec.state == ShotState.DONE:
        return "done", rec.state.value
    return "unchanged", rec.state.value


def _line(shot: Shot, **kw: Any) -> PlannedShot:
    return PlannedShot(shot.id, "new", shot.provider, shot.model, shot.duration, **kw)


async def make_plan(manifest: Manifest, run_dir: Path, options: RunOptions) -> Plan:
    """Plan ``manifest`` against ``run_dir`` (read-only: no lock, nothing written or paid).

    Raises:
        CheckpointError: the run directory's log cannot be read.
    """
    path = run_dir / FILE
    state = load_state(path) if path.exists() else RunState()
    plan = Plan()
    async with AsyncExitStack() as stack:
        quoters: dict[str, SupportsQuote] = {}
        for name in sorted({s.provider for s in manifest.shots}):
            provider = await _quoter(stack, manifest, run_dir, options, name)
            if provider is not None:
                quoters[name] = provider
        for shot in manifest.shots:
            status, recorded = _status(shot, state)
            line = await _estimate(shot, manifest, options, quoters.get(shot.provider))
            plan.shots.append(
                PlannedShot(
                    shot.id,
                    status,
                    shot.provider,
                    shot.model,
                    shot.duration,
                    line.usd,
                    line.credits,
                    line.source,
                    recorded,
                )
            )
    ids = {s.id for s in manifest.shots}
    for sid, rec in state.shots.items():
        if sid not in ids:
            plan.shots.append(
                PlannedShot(sid, "orphaned", rec.provider, rec.model, None, state=rec.state.value)
            )
    return plan


async def _estimate(
    shot: Shot, manifest: Manifest, options: RunOptions, quoter: SupportsQuote | None
) -> PlannedShot:
    """The shot's price exactly as the spend guard computes it (:mod:`pipeline.engine.pricing`)."""
    settings = provider_settings(manifest, shot.provider, registry=options.registry)
    quote = partial(quoter.quote, shot) if quoter is not None else None
    est = await pricing.estimate(shot, options.registry[shot.provider], settings, quote)
    return _line(shot, usd=est.usd, credits=est.credits, source=est.source)


async def _quoter(
    stack: AsyncExitStack, manifest: Manifest, run_dir: Path, options: RunOptions, name: str
) -> SupportsQuote | None:
    spec = options.registry[name]
    settings = provider_settings(
        manifest, name, options.base_urls.get(name), options.registry, options.overrides.get(name)
    )
    key = options.api_keys.get(name)
    if spec.needs_api_key and (not key or not settings.base_url):
        return None
    ctx = ProviderContext(name, settings, run_dir, api_key=key, simulate=options.simulate)
    provider = spec.factory(ctx)
    if not isinstance(provider, SupportsQuote):
        await provider.aclose()
        return None
    await stack.enter_async_context(provider)
    return provider


def render_plan(plan: Plan, budget: float | None = None) -> str:
    """A plain-text table of the plan and its totals."""
    rows = [("shot", "status", "provider/model", "dur", "estimate", "source")]
    for s in plan.shots:
        price = f"${s.usd:.2f}" if s.usd is not None else "price unknown"
        if s.credits is not None:
            price += f" ({s.credits:g} credits)"
        duration = f"{s.duration}s" if s.duration is not None else "-"
        rows.append((s.id, s.status, f"{s.provider}/{s.model}", duration, price, s.source))
    lines = [text_table(rows)]
    t = plan.totals()
    lines.append(
        f"to run: {t['shots_to_run']} shot(s); low ${t['low_usd']:.2f}, expected "
        f"${t['expected_usd']:.2f}, high ${t['high_usd']:.2f}"
        + (f"; {t['unknown']} with unknown price" if t["unknown"] else "")
        + (f"; {t['credits']:g} credits" if t["credits"] else "")
    )
    if budget is not None:
        lines.append(f"budget ${budget:.2f}: {budget_verdict(t, budget)}")
    return "\n".join(lines)


def budget_verdict(totals: dict[str, Any], budget: float) -> str:
    """Whether the plan fits ``budget`` (USD); an unknown price is never counted as $0.

    The runner holds back every shot whose price is unknown when there is a budget, so such a
    plan cannot be said to fit.
    """
    if totals["unknown"]:
        return (
            f"cannot tell whether the plan fits: {totals['unknown']} shot(s) have no price "
            "(set providers.<name>.prices or usd_per_credit, or use a provider key for quotes)"
        )
    if totals["high_usd"] <= budget:
        return "the plan fits"
    if totals["low_usd"] <= budget:
        return "the plan may not fit"
    return "the plan does not fit"
