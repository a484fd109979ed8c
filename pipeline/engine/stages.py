"""One shot's stage machine: upload -> submit -> poll -> fetch, resumable from any recorded state.

Money rules (README, resume semantics): a ``submit_intent`` is durable before every POST; only a
submit that provably created nothing (``NotSent``, 429) is tried again, as the same attempt and
key; anything ambiguous ends in ``needs_reconcile`` unless the provider can prove what happened
(:class:`~pipeline.providers.base.SupportsReconcile`). A shot with a ``submitted`` record is only
ever polled, never submitted again. Expired result URLs are refreshed by polling (free).
"""

from __future__ import annotations

import logging

import anyio

from pipeline.engine.fetching import FetchStage
from pipeline.engine.polling import PollStage
from pipeline.engine.shot_base import Stop
from pipeline.engine.submit import SubmitStage
from pipeline.errors import (
    Ambiguous,
    CheckpointError,
    NotSent,
    RateLimited,
    Rejected,
)
from pipeline.journal.state import ShotRecord
from pipeline.models import (
    Asset,
    Charged,
    Event,
    JobHandle,
    JobStatus,
    MediaRef,
    PollResult,
    ShotState,
)
from pipeline.transfer import download, upload

log = logging.getLogger("pipeline")


class ShotMachine(SubmitStage, PollStage, FetchStage):
    """Drives one shot from its recorded state to a terminal state."""

    async def run(self) -> None:
        """Run the remaining stages. CheckpointError propagates (fail-stop); nothing else does."""
        try:
            await self._run()
        except Stop:
            return
        except (CheckpointError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:  # a bug must not take the batch down; record it
            # A bug, not an expected failure: the traceback only with -v (INFO).
            log.error(
                "%s: internal error (a bug: please report it): %s: %s",
                self.shot.id,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.INFO),
            )
            charged = Charged.UNKNOWN if self._job() else Charged.NO
            await self._emit(
                Event.FAILED,
                ShotState.FAILED,
                str(exc),
                reason=f"internal error: {exc}",
                charged=charged.value,
            )

    async def _run(self) -> None:
        rec = self.rec
        state = rec.state if rec else ShotState.PENDING
        if state == ShotState.DONE and rec and await self._still_done(rec):
            return
        job: JobHandle | None = None
        result: PollResult | None = None
        if state == ShotState.SUBMITTING:
            job = await self._reconcile()
        elif state in (ShotState.POLLING, ShotState.FETCHING, ShotState.DONE):
            job = self._job()
        if state == ShotState.FETCHING and rec and rec.result_url is not None:
            result = PollResult(JobStatus.SUCCEEDED, result_url=rec.result_url)
        media = await self._upload() if job is None else []
        async with self.gate.jobs:  # held from submit until the job is terminal
            if job is None:
                job = await self._submit(media)
            if result is None:
                result = await self._poll(job)
        await self._fetch(job, result)

    # ----- done shots ---------------------------------------------------------------------

    async def _still_done(self, rec: ShotRecord) -> bool:
        if rec.output is None or rec.size is None or rec.sha256 is None:
            return False
        final = self.ctx.run_dir / rec.output
        return await anyio.to_thread.run_sync(
            download.finish_interrupted, final, rec.size, rec.sha256
        )

    # ----- upload -------------------------------------------------------------------------

    async def _upload(self) -> list[MediaRef]:
        assets = self.shot.assets
        if not assets:
            return []
        self.ctx.observer.transition(self.shot, ShotState.UPLOADING)
        mode = self.ctx.policies[self.shot.provider].mode_for(self.shot)
        try:
            return [await self._prepare(asset, mode) for asset in assets]
        except Rejected as exc:  # e.g. storage credentials missing or refused: nothing was paid
            await self._fail(f"upload refused: {exc}", Charged.NO)
        except (NotSent, RateLimited, Ambiguous) as exc:  # storage unreachable: try next run
            reason = f"not uploaded (retries exhausted, run again later): {exc}"
            log.warning("%s: %s", self.shot.id, reason)
            self.ctx.observer.transition(self.shot, ShotState.PENDING, reason)
            raise Stop from None

    async def _prepare(self, asset: Asset, mode: str) -> MediaRef:
        valid_for = self.ctx.media.min_validity_s
        recorded = self.rec.media.get(asset.key) if self.rec else None
        if self.ctx.options.storage_access is not None:
            recorded = None  # signed by a simulated store gone with the process that ran it
        if recorded is not None and upload.usable(recorded, valid_for):
            return upload.with_role(recorded, asset)
        key = (self.shot.provider, asset.key, mode)
        lock = self.ctx.media_locks.setdefault(key, anyio.Lock())
        async with lock:  # single flight per (provider, content, mode)
            ref = self.ctx.media_cache.get(key)
            if ref is None or not (ref.url.startswith("data:") or upload.usable(ref, valid_for)):
                async with self.gate.uploads:
                    ref = await self.calls.call(
                        lambda: self.ctx.media.resolve(asset, mode), provider_health=False
                    )
                self.ctx.media_cache[key] = ref
        ref = upload.with_role(ref, asset)
        if asset.path is not None and not ref.url.startswith("data:"):
            await self.ctx.append(
                Event.UPLOADED,
                self.shot.id,
                asset=asset.key,
                url=ref.url,
                role=ref.role.value,
                sha256=ref.sha256,
                mime=ref.mime,
                expires_at=ref.expires_at,
            )
        return ref
