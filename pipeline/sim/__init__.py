"""Protocol-faithful simulators of the provider APIs (aiohttp applications on 127.0.0.1).

Each module ``pipeline/sim/<provider>.py`` exposes ``make_app(config, **options)`` and
``BASE_PATH`` (what the adapter's ``base_url`` ends with). Shared machinery (ledger, faults,
timing, clips, serving) lives in :mod:`pipeline.sim.common`.

:func:`running` serves the simulators a run needs and yields where they listen; it backs both
``pipeline run --simulate`` (in-process, gone when the run ends) and ``pipeline sim`` (a
standing server, so an interrupted rehearsal can be resumed against the same jobs).

:mod:`pipeline.sim.objectstore` is the simulated S3-compatible object store ``--simulate`` uploads
to (``objectstore.running()``), served in the same process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType

from aiohttp import web

from pipeline.sim.common import SimConfig, serve
from pipeline.sim.newapi import app as newapi
from pipeline.sim.relaydance import app as relaydance
from pipeline.sim.seedance2 import app as seedance2
from pipeline.sim.venice import app as venice

#: The key every simulator accepts in ``--simulate`` mode (not a secret).
SIM_KEY = "sim-key"


@dataclass(frozen=True, slots=True)
class SimSpec:
    """How to build one provider's simulator and where its adapter's base URL points."""

    name: str
    make_app: Callable[[SimConfig], web.Application]
    base_path: str


@dataclass(frozen=True, slots=True)
class RunningSim:
    """A served simulator: ``base_url`` for the adapter and the ``app`` (ledger, faults)."""

    name: str
    base_url: str
    app: web.Application


SIMULATORS: Mapping[str, SimSpec] = MappingProxyType(
    {
        "venice": SimSpec("venice", venice.make_app, venice.BASE_PATH),
        "seedance2": SimSpec(
            "seedance2",
            lambda cfg: seedance2.make_app(cfg, allow_loopback_media=True),
            seedance2.BASE_PATH,
        ),
        "newapi": SimSpec("newapi", newapi.make_app, newapi.BASE_PATH),
        "relaydance": SimSpec("relaydance", relaydance.make_app, relaydance.BASE_PATH),
    }
)


@asynccontextmanager
async def running(
    names: Iterable[str],
    *,
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[dict[str, RunningSim]]:
    """Serve the simulators of ``names`` (unknown names are skipped) until the block exits.

    Args:
        names: provider names.
        config: simulator settings (default: key :data:`SIM_KEY`, 1 s jobs).
        host: address to bind (loopback by default).
        port: first port (the next simulators take the following ports); 0 picks free ports.

    Yields:
        ``{provider: RunningSim}``.
    """
    cfg = config or SimConfig(api_key=SIM_KEY, latency_s=1.0)
    out: dict[str, RunningSim] = {}
    async with AsyncExitStack() as stack:
        for i, name in enumerate(sorted(set(names) & set(SIMULATORS))):
            spec = SIMULATORS[name]
            app = spec.make_app(cfg)
            origin = await stack.enter_async_context(serve(app, host, port + i if port else 0))
            out[name] = RunningSim(name, origin + spec.base_path, app)
        yield out
