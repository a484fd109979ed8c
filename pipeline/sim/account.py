"""The provider's own view of one account's load, for tests of shared limits.

Jobs in flight (submitted, not yet finished), the most ever in flight at once, and every
submit's time.

A simulator calls :meth:`AccountView.submitted` for each job it accepts; ``GET /_sim/account``
(:func:`route`) answers ``{"in_flight", "max_in_flight", "submits": [{"t", "job_id",
"prompt"}]}`` (``t``: Unix seconds). It counts what the *provider* sees, whatever the clients
believe, so several client processes sharing one account can be checked against it.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class AccountView:
    """Jobs in flight and submits of one simulated account (see the module docstring)."""

    max_in_flight: int = 0
    submits: list[dict[str, Any]] = field(default_factory=list)
    _ends: list[float] = field(default_factory=list)

    def in_flight(self, now: float | None = None) -> int:
        """Jobs submitted and not yet finished at ``now`` (default: the current time)."""
        now = time.time() if now is None else now
        while self._ends and self._ends[0] <= now:
            heapq.heappop(self._ends)
        return len(self._ends)

    def submitted(self, job_id: str, prompt: str, finishes_at: float) -> None:
        """Count a job accepted now that finishes at ``finishes_at`` (Unix seconds)."""
        now = time.time()
        self.submits.append({"t": now, "job_id": job_id, "prompt": prompt})
        heapq.heappush(self._ends, finishes_at)
        self.max_in_flight = max(self.max_in_flight, self.in_flight(now))


ACCOUNT = web.AppKey("account", AccountView)


def install(app: web.Application) -> AccountView:
    """Give ``app`` an account view and its ``GET /_sim/account`` route."""
    view = app[ACCOUNT] = AccountView()
    app.router.add_get("/_sim/account", route, name="sim-account")
    return view


async def route(request: web.Request) -> web.Response:
    """``GET /_sim/account``: the view as JSON."""
    view = request.app[ACCOUNT]
    return web.json_response(
        {
            "in_flight": view.in_flight(),
            "max_in_flight": view.max_in_flight,
            "submits": view.submits,
        }
    )
