"""Shared fixtures: asyncio only (aiohttp does not run on trio), retries without sleeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stamina


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    """Retries keep their attempt counts (capped at 5) but skip the backoff sleeps."""
    with stamina.set_testing(True, attempts=5, cap=True):
        yield
