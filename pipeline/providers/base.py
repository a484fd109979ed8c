"""The provider seam: a small Protocol every adapter satisfies, plus its optional extensions.

An adapter is a pure codec (build the request, parse the response) plus a thin I/O shell. The
runner owns everything else: ordering, checkpointing, retries, the poll loop and its deadline,
concurrency and rate limits, and writing verified files. Adapters never sleep and never write the
checkpoint; they raise only :mod:`pipeline.errors` exceptions (aiohttp's are mapped at the edge).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.models import Download, JobHandle, MediaRef, ModelCaps, PollResult, Shot
from pipeline.settings import DownloadSettings, ProviderSettings


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """How a provider can receive a shot's local media files (README "Providers", media).

    Attributes:
        file_urls: it reads local files directly (``file://``; the ``local`` renderer only).
        data_urls: it accepts inline ``data:<mime>;base64,...`` URLs.
        max_inline_bytes: largest total of a request's data URLs (base64 bytes); above it, the
            shot's files are uploaded to object storage instead.
        inline_kinds: media kinds (``image``, ``video``, ``audio``) accepted as data URLs; a
            shot with a local file of another kind is uploaded instead.
    """

    file_urls: bool = False
    data_urls: bool = False
    max_inline_bytes: int = 0
    inline_kinds: tuple[str, ...] = ("image", "video", "audio")

    def mode_for(self, shot: Shot) -> str:
        """How ``shot``'s local files reach the provider.

        Returns :data:`FILE`, :data:`INLINE` or :data:`UPLOAD` (object storage, presigned URLs).
        """
        if self.file_urls:
            return FILE
        local = [a for a in shot.assets if a.path is not None]
        total = sum(inline_size(a.size or 0, a.mime) for a in local)
        kinds_ok = all((a.mime or "").split("/")[0] in self.inline_kinds for a in local)
        if self.data_urls and kinds_ok and total <= self.max_inline_bytes:
            return INLINE
        return UPLOAD

    def needs_storage(self, shot: Shot) -> bool:
        """True when ``shot`` has local files that must go through object storage."""
        return any(a.path is not None for a in shot.assets) and self.mode_for(shot) == UPLOAD


#: How a shot's local files reach a provider (:meth:`MediaPolicy.mode_for`).
INLINE, UPLOAD, FILE = "inline", "upload", "file"


def inline_size(size: int, mime: str | None) -> int:
    """Bytes a file of ``size`` bytes takes as a ``data:`` URL."""
    return len(f"data:{mime or 'application/octet-stream'};base64,") + 4 * ((size + 2) // 3)


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the runner hands an adapter when it builds one.

    Attributes:
        name: the registry name (``"venice"``...).
        settings: the manifest's settings merged over the adapter's defaults.
        api_key: the secret read from ``settings.api_key_env`` by the CLI, or None.
        run_dir: the run directory (the ``local`` provider keeps its job store there).
        simulate: True when talking to the in-process simulators (loopback URLs allowed).
        downloads: result download policy (allowed private hosts, size cap).
    """

    name: str
    settings: ProviderSettings
    run_dir: Path
    api_key: str | None = None
    simulate: bool = False
    downloads: DownloadSettings = field(default_factory=DownloadSettings)


class Provider(Protocol):
    """A video-generation service, driven stage by stage by the runner.

    Implementations are async context managers: ``__aenter__`` returns self, ``__aexit__`` calls
    :meth:`aclose`.
    """

    name: str

    async def submit(self, shot: Shot, media: Sequence[MediaRef], *, key: str) -> JobHandle:
        """Make the one paid call that creates the job for ``shot``.

        ``key`` (``run:shot:attempt``) is the client reference; it is sent where the provider
        accepts one and is what :meth:`SupportsReconcile.reconcile` looks for.

        Raises:
            NotSent: the request never left (safe to retry with the same key).
            RateLimited: 429; nothing was created.
            Rejected: the provider refused definitely; nothing was charged.
            Ambiguous: the job may exist and be charged.
        """
        ...

    async def poll(self, job: JobHandle) -> PollResult:
        """Ask once for the job's status. Never sleeps.

        Raises:
            JobFailed: the provider reports the job failed through an error response.
            RateLimited, NotSent, Ambiguous: transient; the runner retries the (free) poll.
        """
        ...

    def fetch(self, job: JobHandle, result: PollResult) -> AbstractAsyncContextManager[Download]:
        """Open the finished video as a byte stream; ``transfer.download`` writes and verifies it.

        Raises:
            FetchError: the URL expired (``expired=True``: poll again for a fresh one) or the
                transfer failed.
        """
        ...

    async def aclose(self) -> None:
        """Release sessions, worker pools and files. Idempotent."""
        ...

    async def __aenter__(self) -> Provider:
        """Return self."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Call :meth:`aclose`."""
        ...


@runtime_checkable
class SupportsReconcile(Protocol):
    """Optional: find the job a lost submit response may have created."""

    async def reconcile(self, shot: Shot, *, key: str, since: float) -> JobHandle | None:
        """Look for a job created for ``key`` at or after ``since`` (Unix seconds).

        Returns:
            The job when exactly one matches; None when the provider proves none exists.

        Raises:
            Ambiguous: the provider cannot tell (listing unavailable or several candidates).
        """
        ...


@runtime_checkable
class SupportsProbe(Protocol):
    """Optional: a free call that shows whether the provider answers (e.g. ``GET /models``)."""

    async def probe(self) -> None:
        """Make one free request; return when the provider answered normally.

        Raises:
            ProviderError: the provider is still failing (5xx, timeout, refused).
        """
        ...


@runtime_checkable
class SupportsCancel(Protocol):
    """Optional: cancel a job at the provider."""

    async def cancel(self, job: JobHandle) -> None:
        """Ask the provider to cancel ``job``. Raises ``Rejected`` when it cannot be cancelled."""
        ...


@runtime_checkable
class SupportsCleanup(Protocol):
    """Optional: tidy up at the provider after a verified fetch (Venice ``complete``, DELETE)."""

    async def cleanup(self, job: JobHandle) -> None:
        """Delete stored media or revoke links for ``job``. Failures are logged, not fatal."""
        ...


@runtime_checkable
class SupportsQuote(Protocol):
    """Optional: a free price quote for a shot."""

    async def quote(self, shot: Shot) -> float:
        """Return the price of ``shot`` in USD without creating a job."""
        ...


ProviderFactory = Callable[[ProviderContext], Provider]

#: Extra offline checks of one shot beyond its :class:`ModelCaps` (e.g. "reference images and
#: first/last frames are mutually exclusive"). Returns ``(field, message)`` pairs; ``field`` is a
#: shot field name such as ``"references"``; empty when the shot is fine.
ShotCheck = Callable[[Shot, ModelCaps], Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Static facts about an adapter, usable offline (``pipeline validate``).

    Attributes:
        name: registry name.
        factory: builds the adapter for a run.
        models: capability table per model id.
        defaults: default settings (base URL, key variable, limits, poll bounds).
        needs_api_key: whether a missing key is an error before the run starts.
        check: provider-specific offline checks run by ``pipeline validate`` (see ShotCheck).
        media: how local media files reach the provider (file, data URL, or storage upload).
        credits: the provider's published credit price of a shot, for ``pipeline plan``.
        free: jobs cost nothing (the offline ``local`` renderer): priced at $0, not unknown.
        default_model: model used when the manifest names none (default: the first in models).
    """

    name: str
    factory: ProviderFactory
    models: Mapping[str, ModelCaps]
    defaults: ProviderSettings
    needs_api_key: bool = True
    check: ShotCheck | None = None
    credits: Callable[[Shot], float | None] | None = None
    free: bool = False
    default_model: str | None = None
    media: MediaPolicy = field(default_factory=MediaPolicy)
