"""What a shot workflow is given, as plain JSON (DBOS stores workflow inputs in PostgreSQL).

Workers share no disk and may run another build of the same version: a task carries everything
a worker needs and nothing it cannot use, as JSON values, not pickled classes:

- the shot (:class:`~pipeline.models.Shot`; its assets' local paths are names only, the files
  are on the machine that ran ``pipeline run``);
- its media, already prepared there (:class:`~pipeline.models.MediaRef`: presigned URLs of the
  manifest's object storage, data URLs, or remote URLs);
- its provider's merged settings (account, limits, base URL, poll bounds, retry policy);
- the manifest's download policy and object storage (where the worker puts the video).

API keys are never in a task: each worker reads its own from its environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.distributed.queues import queue_name
from pipeline.models import Asset, JobHandle, MediaRef, MediaRole, PollResult, Shot
from pipeline.settings import DownloadSettings, ProviderSettings, StorageSettings

Json = dict[str, Any]


def asset_json(a: Asset) -> Json:
    """``a`` as JSON (its path as text)."""
    return {
        "role": a.role.value,
        "path": str(a.path) if a.path is not None else None,
        "url": a.url,
        "sha256": a.sha256,
        "size": a.size,
        "mime": a.mime,
        "width": a.width,
        "height": a.height,
        "duration_s": a.duration_s,
    }


def asset_of(d: Json) -> Asset:
    """The :class:`Asset` of :func:`asset_json`."""
    path = d.get("path")
    return Asset(
        role=MediaRole(d["role"]),
        path=Path(path) if path else None,
        **{k: d.get(k) for k in ("url", "sha256", "size", "mime", "width", "height", "duration_s")},
    )


_SHOT_PLAIN = [
    "id",
    "scene",
    "name",
    "prompt",
    "provider",
    "model",
    "duration",
    "aspect_ratio",
    "fingerprint",
    "take",
    "resolution",
    "audio",
    "seed",
    "consent",
    "line",
    "order",
]


def shot_json(shot: Shot) -> Json:
    """``shot`` as JSON."""
    out: Json = {k: getattr(shot, k) for k in _SHOT_PLAIN}
    out["image"] = asset_json(shot.image) if shot.image else None
    out["end_image"] = asset_json(shot.end_image) if shot.end_image else None
    out["references"] = [asset_json(a) for a in shot.references]
    out["extra"] = dict(shot.extra)
    return out


def shot_of(d: Json) -> Shot:
    """The :class:`Shot` of :func:`shot_json`."""
    return Shot(
        **{k: d[k] for k in _SHOT_PLAIN},
        image=asset_of(d["image"]) if d.get("image") else None,
        end_image=asset_of(d["end_image"]) if d.get("end_image") else None,
        references=tuple(asset_of(a) for a in d.get("references", [])),
        extra=dict(d.get("extra") or {}),
    )


def media_json(ref: MediaRef) -> Json:
    """``ref`` as JSON."""
    return {
        "role": ref.role.value,
        "url": ref.url,
        "sha256": ref.sha256,
        "mime": ref.mime,
        "expires_at": ref.expires_at,
    }


def media_of(d: Json) -> MediaRef:
    """The :class:`MediaRef` of :func:`media_json`."""
    return MediaRef(
        role=MediaRole(d["role"]),
        url=d["url"],
        sha256=d.get("sha256"),
        mime=d.get("mime"),
        expires_at=d.get("expires_at"),
    )


def job_json(job: JobHandle) -> Json:
    """``job`` as JSON (its one-time ``data`` included: the store is the run's checkpoint)."""
    return {
        "provider": job.provider,
        "job_id": job.job_id,
        "model": job.model,
        "submitted_at": job.submitted_at,
        "data": dict(job.data),
        "cost_usd": job.cost_usd,
        "credits": job.credits,
    }


def job_of(d: Json) -> JobHandle:
    """The :class:`JobHandle` of :func:`job_json`."""
    return JobHandle(
        provider=d["provider"],
        job_id=d["job_id"],
        model=d["model"],
        submitted_at=float(d["submitted_at"]),
        data={str(k): str(v) for k, v in (d.get("data") or {}).items()},
        cost_usd=d.get("cost_usd"),
        credits=d.get("credits"),
    )


def poll_json(r: PollResult) -> Json:
    """``r`` as JSON."""
    return {
        "status": r.status.value,
        "raw_status": r.raw_status,
        "progress": r.progress,
        "eta_s": r.eta_s,
        "result_url": r.result_url,
        "message": r.message,
        "refunded": r.refunded,
    }


def poll_of(d: Json) -> PollResult:
    """The :class:`PollResult` of :func:`poll_json`."""
    from pipeline.models import JobStatus

    return PollResult(
        status=JobStatus(d["status"]),
        **{k: d.get(k) for k in ("progress", "eta_s", "result_url", "refunded")},
        raw_status=d.get("raw_status") or "",
        message=d.get("message") or "",
    )


@dataclass(frozen=True, slots=True)
class ShotTask:
    """One shot workflow's input (see the module docstring).

    Attributes:
        run_id: the run.
        shot: the shot (one take).
        media: its prepared media, in ``shot.assets`` order.
        settings: its provider's merged settings.
        downloads: the manifest's download policy.
        storage: the manifest's object storage (None: the manifest has none; then outputs
            cannot leave the worker and the shot fails at fetch).
        simulate: the run talks to simulators (loopback result URLs allowed).
    """

    run_id: str
    shot: Shot
    media: tuple[MediaRef, ...]
    settings: ProviderSettings
    downloads: DownloadSettings
    storage: StorageSettings | None
    simulate: bool = False

    def to_json(self) -> Json:
        """This task as JSON (what is enqueued)."""
        return {
            "v": 1,
            "run": self.run_id,
            "shot": shot_json(self.shot),
            "media": [media_json(m) for m in self.media],
            "settings": self.settings.model_dump(mode="json"),
            "downloads": self.downloads.model_dump(mode="json"),
            "storage": self.storage.model_dump(mode="json") if self.storage else None,
            "simulate": self.simulate,
        }

    @classmethod
    def of(cls, d: Json) -> ShotTask:
        """The task of :meth:`to_json`."""
        storage = d.get("storage")
        return cls(
            run_id=d["run"],
            shot=shot_of(d["shot"]),
            media=tuple(media_of(m) for m in d["media"]),
            settings=ProviderSettings.model_validate(d["settings"]),
            downloads=DownloadSettings.model_validate(d["downloads"]),
            storage=StorageSettings.model_validate(storage) if storage else None,
            simulate=bool(d.get("simulate", False)),
        )

    @property
    def queue(self) -> str:
        """The shot's account queue: ``"<provider>.<account>"`` (:func:`.queues.queue_name`)."""
        return queue_name(self.shot.provider, self.settings.account or "default")

    @property
    def workflow_id(self) -> str:
        """The shot workflow's DBOS id: run, shot and fingerprint (:func:`shot_workflow_id`)."""
        return shot_workflow_id(self.run_id, self.shot.id, self.shot.fingerprint)


def shot_workflow_id(run_id: str, shot_id: str, fingerprint: str) -> str:
    """``"<run>/<shot>/<first 16 hex of the fingerprint>"``: a shot workflow's DBOS id.

    Enqueuing the same shot of the same run twice is one workflow; an edited shot (a new
    fingerprint) is a new one.
    """
    return f"{run_id}/{shot_id}/{fingerprint.removeprefix('sha256:')[:16]}"
