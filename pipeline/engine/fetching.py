"""Fetching a finished job's video: one retry policy, expired URLs refreshed by polls (free)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from pipeline._util.redaction import scrub
from pipeline.engine import retry
from pipeline.engine.context import output_path
from pipeline.engine.limits import CallKind
from pipeline.engine.shot_base import ShotBase
from pipeline.errors import (
    FetchError,
    ProviderError,
)
from pipeline.models import (
    Artifact,
    Charged,
    Event,
    JobHandle,
    PollResult,
    ShotState,
)
from pipeline.providers.base import (
    SupportsCleanup,
)
from pipeline.transfer import download, playable

log = logging.getLogger("pipeline")


class FetchStage(ShotBase):
    """Fetch the finished video: verified, atomically published, recorded."""

    async def _fetch(self, job: JobHandle, result: PollResult) -> None:
        final = output_path(self.ctx.run_dir, self.shot.id)  # its directory: see write_verified

        async def record(art: Artifact, publish: Callable[[], None]) -> None:
            rel = art.path.relative_to(self.ctx.run_dir).as_posix()
            # The rename to the final name runs in the checkpoint's writer thread right after
            # the fsync that makes ``fetched`` durable: one thread hop for both.
            await self._emit(
                Event.FETCHED,
                ShotState.DONE,
                rel,
                then=publish,
                path=rel,
                bytes=art.size,
                sha256=art.sha256,
            )

        # The video's own witness (shots/<id>.json, written before its rename): `pipeline
        # repair` rebuilds a truncated or lost log from these, so a verified video is never paid
        # for again. No secrets, no URLs.
        sidecar = scrub(  # a job id that echoes the key must not reach the file either
            {
                "v": 1,
                "shot": self.shot.id,
                "fingerprint": self.shot.fingerprint,
                "provider": job.provider,
                "model": job.model,
                "job": job.job_id,
                "run": self.ctx.run_id,
                "simulated": self.ctx.options.simulate,
                "path": final.relative_to(self.ctx.run_dir).as_posix(),
            }
        )

        refresh = False  # the last result URL expired: poll (free) for a fresh one first

        async def once() -> None:
            nonlocal result, refresh
            if refresh:
                await self.gate.ready(CallKind.POLL)
                result = await self.provider.poll(job)
                refresh = False
            try:
                async with self.provider.fetch(job, result) as stream:
                    await download.write_verified(
                        stream,
                        final,
                        max_bytes=self.ctx.downloads.max_bytes,
                        record=record,
                        expect=playable.Expected(self.shot.duration, self.shot.provider),
                        sidecar=sidecar,
                    )
            except FetchError as exc:
                refresh = exc.expired
                raise

        async with self.gate.downloads:
            try:
                # The provider's one retry policy, as for polls: expired URLs are refreshed,
                # transient failures and unplayable bodies fetched again.
                await retry.call(lambda: self.calls.backoff(retry.idempotent_retryable), once)
            except ProviderError as exc:
                if isinstance(exc, FetchError) and (
                    exc.rejected or isinstance(exc, playable.UnplayableVideo)
                ):
                    # The video itself is refused (cap, not a video, private address; or still
                    # unplayable after the retries): the job is paid: never resubmit.
                    await self._fail(f"download_rejected: {exc}", Charged.YES)
                if isinstance(exc, FetchError) and exc.expired:
                    self._fetch_pending(
                        f"the result URL kept expiring (refreshed by polling): {exc}"
                    )
                self._fetch_pending(f"fetch failed: {exc}")
        if self.ctx.supports(self.shot.provider, SupportsCleanup):
            try:
                await cast(SupportsCleanup, self.provider).cleanup(job)
            except ProviderError as exc:
                log.warning("%s: cleanup at the provider failed: %s", self.shot.id, exc)
