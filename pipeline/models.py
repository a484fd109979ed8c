"""Value types shared by the manifest, the runner, the checkpoint and the providers.

Everything here is immutable. Units: durations in seconds, times as Unix seconds (float) unless a
name says ``_ms``, sizes in bytes, money in USD.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})


class ShotState(StrEnum):
    """Where a shot stands; the values appear in ``status --json`` and the summary."""

    PENDING = "pending"  #: planned, nothing done yet (or a retryable attempt ended)
    UPLOADING = "uploading"  #: its media are being prepared
    SUBMITTING = "submitting"  #: a submit intent is written, the outcome is not yet known
    POLLING = "polling"  #: the provider accepted the job; waiting for it to finish
    FETCHING = "fetching"  #: the job finished; the video is being downloaded
    DONE = "done"  #: the verified MP4 is in ``shots/``
    FAILED = "failed"  #: ended without a video (reason and charged recorded)
    NEEDS_RECONCILE = "needs_reconcile"  #: a submit may or may not have been charged
    CANCELLED = "cancelled"  #: cancelled by the user


TERMINAL_STATES = frozenset(
    {ShotState.DONE, ShotState.FAILED, ShotState.NEEDS_RECONCILE, ShotState.CANCELLED}
)


class Event(StrEnum):
    """Checkpoint event names (README, resume semantics), as written to the JSONL log."""

    RUN_STARTED = "run_started"
    SHOT_PLANNED = "shot_planned"
    UPLOADED = "uploaded"
    SUBMIT_INTENT = "submit_intent"
    SUBMITTED = "submitted"
    SUBMIT_NOT_SENT = "submit_not_sent"
    SUBMIT_REJECTED = "submit_rejected"
    SUBMIT_AMBIGUOUS = "submit_ambiguous"
    #: The spend guard held the shot back before its intent (``why``: budget / price unknown).
    SUBMIT_HELD = "submit_held"
    STATUS = "status"
    COMPLETED = "completed"
    FETCHED = "fetched"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RUN_FINISHED = "run_finished"
    #: Review (``pipeline review``, ``pipeline pick``): ``shot`` is the take, ``key`` its
    #: ``<scene>-<shot>`` and ``take`` its number; ``take`` 0 clears the shot's pick.
    TAKE_PICKED = "take_picked"
    #: A take judged unusable (``rejected``: true) or no longer so (false).
    TAKE_REJECTED = "take_rejected"
    #: A reviewer's free-text note on a take (``text``).
    NOTE_ADDED = "note_added"
    #: A new, paid take of a shot was asked for: ``shot`` is the new take's id, ``from`` the
    #: take it copies (prompt, media, model), ``take`` its number; the next runner plans it.
    REROLL_REQUESTED = "reroll_requested"


class JobStatus(StrEnum):
    """A provider job's status, normalised across providers (docs/providers/README.md §6)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Charged(StrEnum):
    """Whether a failed shot cost money."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class MediaRole(StrEnum):
    """What a piece of input media is for."""

    IMAGE = "image"  #: first frame
    END_IMAGE = "end_image"  #: last frame
    REFERENCE_IMAGE = "reference_image"
    REFERENCE_VIDEO = "reference_video"
    REFERENCE_AUDIO = "reference_audio"


@dataclass(frozen=True, slots=True)
class Asset:
    """One input media item of a shot, as written in the manifest.

    Exactly one of ``path`` (a local file, absolute) and ``url`` (a remote http(s) URL passed
    through) is set. ``sha256`` (hex) and ``size`` (bytes) describe local files; ``mime`` is
    sniffed from the content, not the extension; ``width``/``height`` (pixels) and
    ``duration_s`` (seconds) are measured where the file could be decoded.
    """

    role: MediaRole
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None

    @property
    def key(self) -> str:
        """Identity used for upload de-duplication: the content hash, else the URL."""
        return self.sha256 or self.url or ""


@dataclass(frozen=True, slots=True)
class Shot:
    """One fully resolved unit of work: one take of one shot, one paid job.

    ``id`` is ``scene-shot[-tN]`` (characters ``[A-Za-z0-9._-]`` only, so it is a safe file
    stem). ``fingerprint`` is ``"sha256:<hex>"`` of the canonical resolved request; an edited
    manifest redoes exactly the shots whose fingerprint changed. ``resolution`` and ``audio`` are
    None when the manifest does not set them: the adapter then leaves the field out of the
    request, so the provider's own default applies (Venice, for one, defaults audio to on).
    """

    id: str
    scene: str
    name: str
    prompt: str
    provider: str
    model: str
    duration: int
    aspect_ratio: str
    fingerprint: str
    take: int | None = None
    resolution: str | None = None
    audio: bool | None = None
    seed: int | None = None
    image: Asset | None = None
    end_image: Asset | None = None
    references: tuple[Asset, ...] = ()
    consent: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    line: int | None = None
    order: int = 0

    @property
    def assets(self) -> tuple[Asset, ...]:
        """All media of the shot: first frame, end frame, then references in manifest order."""
        head = tuple(a for a in (self.image, self.end_image) if a is not None)
        return head + self.references


@dataclass(frozen=True, slots=True)
class MediaRef:
    """An asset after the upload stage: what goes into the provider request.

    ``url`` is a ``data:`` URL, a presigned/public https URL, or a ``file://`` URL for the local
    provider. ``expires_at`` (Unix seconds) is set for presigned URLs.
    """

    role: MediaRole
    url: str
    sha256: str | None = None
    mime: str | None = None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobHandle:
    """A job the provider accepted (and, for most providers, charged for).

    ``data`` holds one-time values that exist only in the submit response (e.g. Venice's private
    ``download_url``); they are bearer capabilities and are stored only in the 0600 checkpoint.
    ``cost_usd`` / ``credits`` are what the provider said the job costs, when it said so.
    """

    provider: str
    job_id: str
    model: str
    submitted_at: float
    data: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    cost_usd: float | None = None
    credits: float | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    """One observation of a job's status. ``poll()`` returns it and never sleeps.

    Attributes:
        status: normalised status; unknown provider strings are mapped to RUNNING.
        raw_status: the provider's own status string, for display.
        progress: 0.0-1.0 when the provider reports it.
        eta_s: provider's hint of remaining seconds (e.g. Venice ``average_execution_time``).
        result_url: where the video can be fetched, when the provider gives a URL.
        message: failure reason or status text from the provider.
        refunded: for FAILED, whether the provider refunded the charge (None: unknown).
    """

    status: JobStatus
    raw_status: str = ""
    progress: float | None = None
    eta_s: float | None = None
    result_url: str | None = None
    message: str = ""
    refunded: bool | None = None


@dataclass(slots=True)
class Download:
    """A byte stream of a finished video, yielded by ``Provider.fetch``.

    ``size`` is the announced length (Content-Length) or None; ``content_type`` the announced
    type. The consumer (``pipeline.transfer.download``) enforces the size cap, hashes and verifies.
    """

    chunks: AsyncIterator[bytes]
    size: int | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Artifact:
    """A verified output file: ``path`` under ``RUN_DIR/shots/``, ``size`` bytes, ``sha256`` hex."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelCaps:
    """What one provider model accepts; ``pipeline validate`` checks shots against it offline.

    Attributes:
        durations: allowed durations in whole seconds.
        aspect_ratios: allowed ratios, e.g. ``("16:9", "9:16")``; empty means the model takes none.
        resolutions: allowed resolutions, e.g. ``("720p",)``; empty means the model takes none.
        max_prompt_chars: longest prompt accepted.
        first_frame: whether a first-frame image is accepted.
        end_frame: whether a last-frame image is accepted.
        max_reference_images / max_reference_videos / max_reference_audio: reference counts.
        requires_image: the model is image-to-video and needs a first frame.
        audio: whether the model can generate audio.
        max_media_bytes: largest accepted input file, in bytes (None: no documented limit).
        min_image_short_side: smallest accepted short side of an input image, in pixels.
        image_aspect_range: accepted (min, max) width/height ratio of input images.
        reference_video_s: accepted (min, max) length of each reference video, in seconds.
        max_reference_video_total_s: longest total of all reference videos, in seconds.
        max_reference_audio_s: longest accepted reference audio file, in seconds.
    """

    durations: tuple[int, ...]
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...] = ()
    max_prompt_chars: int = 2500
    first_frame: bool = True
    end_frame: bool = False
    max_reference_images: int = 0
    max_reference_videos: int = 0
    max_reference_audio: int = 0
    requires_image: bool = False
    audio: bool = False
    max_media_bytes: int | None = None
    min_image_short_side: int | None = None
    image_aspect_range: tuple[float, float] | None = None
    reference_video_s: tuple[float, float] | None = None
    max_reference_video_total_s: float | None = None
    max_reference_audio_s: float | None = None
