"""Helpers shared by the per-provider adapter tests (tests/test_<provider>.py).

Recorded bodies live in ``tests/data/<provider>/``; adapters are served against their simulator
on 127.0.0.1 with the settings a real run would build (``simulate=True``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from pipeline.models import JobHandle, JobStatus, PollResult, Shot
from pipeline.providers.base import Provider, ProviderContext, ProviderSpec
from pipeline.providers.lifecycle import HttpAdapter
from pipeline.sim import SIMULATORS
from pipeline.sim.common import FaultKind, serve

DATA = Path(__file__).parent / "data"

A = TypeVar("A", bound=HttpAdapter)

#: Submit faults and how many jobs each leaves charged: a fault before the handler ran creates
#: nothing; one after it leaves a charged job that only ``Ambiguous`` keeps from being paid twice.
SUBMIT_FAULTS = [
    (FaultKind.RESET_BEFORE, 0),
    (FaultKind.SERVER_ERROR, 0),
    (FaultKind.RESET_AFTER, 1),
    (FaultKind.SERVER_ERROR_AFTER, 1),
    (FaultKind.TRUNCATE, 1),
]


def load_json(provider: str, name: str) -> Any:
    """The recorded body ``tests/data/<provider>/<name>`` (``.json`` is added when missing)."""
    filename = name if name.endswith(".json") else f"{name}.json"
    return json.loads((DATA / provider / filename).read_text())


def make_shot(provider: str, model: str, **overrides: Any) -> Shot:
    """A resolved shot ``harbor-s01`` for ``provider``/``model``; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "id": "harbor-s01",
        "scene": "harbor",
        "name": "s01",
        "prompt": "Wide shot at dawn: a fisherwoman mends a net",
        "provider": provider,
        "model": model,
        "duration": 5,
        "aspect_ratio": "16:9",
        "fingerprint": "sha256:x",
    }
    fields.update(overrides)
    return Shot(**fields)


def provider_context(
    spec: ProviderSpec,
    base_url: str | None,
    tmp_path: Path,
    *,
    key: str | None,
    simulate: bool = True,
) -> ProviderContext:
    """The context a run builds for ``spec``, with ``base_url`` over its default settings."""
    settings = spec.defaults.model_copy(update={"base_url": base_url})
    return ProviderContext(
        name=spec.name, settings=settings, run_dir=tmp_path, api_key=key, simulate=simulate
    )


@asynccontextmanager
async def served_adapter(
    spec: ProviderSpec,
    adapter: Callable[[ProviderContext], A],
    app: web.Application,
    tmp_path: Path,
    *,
    key: str | None,
) -> AsyncIterator[tuple[A, str]]:
    """Serve the simulator ``app`` and open ``adapter`` against it; both close on exit.

    Yields:
        ``(provider, origin)``: the open adapter and the server's ``http://127.0.0.1:<port>``.
    """
    async with serve(app) as origin:
        base_url = origin + SIMULATORS[spec.name].base_path
        async with adapter(provider_context(spec, base_url, tmp_path, key=key)) as provider:
            yield provider, origin


async def assert_refuses_use(provider: Provider, shot: Shot, job: JobHandle) -> None:
    """Check that every stage of the closed ``provider`` raises RuntimeError, before any I/O."""
    with pytest.raises(RuntimeError, match="closed"):
        await provider.submit(shot, [], key="k")
    with pytest.raises(RuntimeError, match="closed"):
        await provider.poll(job)
    with pytest.raises(RuntimeError, match="closed"):
        async with provider.fetch(job, PollResult(JobStatus.SUCCEEDED)):
            pass
