"""One exception tree for everything the runner raises, branched by what happens next.

::

    PipelineError
    ├── ManifestError           bad input: file, line, field, what is allowed (exit 2)
    ├── UsageError              a command given what it cannot act on: not a run directory, a
    │                           rehearsal continued as a real run or the reverse (exit 2)
    ├── CheckpointError         the event log cannot be trusted or written: fail-stop (exit 3)
    │   └── LockedError         another runner holds the run directory
    └── ProviderError           carries provider, shot id, HTTP status, provider message
        ├── NotSent             the request provably never left: safe to retry as the same attempt
        ├── Rejected            definite answer, nothing charged (4xx validation, balance, consent)
        ├── Ambiguous           may have been accepted and charged: reconcile, never blind retry
        ├── RateLimited         the provider asked us to wait ``retry_after`` seconds
        ├── JobFailed           the provider finished the job as failed (``refunded``: paid back?)
        └── FetchError          the result could not be downloaded or failed verification

aiohttp exceptions are mapped into this tree at the adapter edge (``pipeline/providers/``) and never
escape it. Messages never contain API keys, auth headers or presigned query strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

#: Exit codes of every command: done; done but something needs the user; bad input; the
#: checkpoint is unsafe; the run directory is locked by another runner; interrupted (Ctrl-C).
EXIT_OK, EXIT_ATTENTION, EXIT_INPUT, EXIT_CHECKPOINT, EXIT_LOCKED, EXIT_INTERRUPTED = (
    0,
    1,
    2,
    3,
    4,
    130,
)


class PipelineError(Exception):
    """Root of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class ManifestIssue:
    """One problem in a manifest.

    Attributes:
        file: the manifest path as given by the user.
        line: 1-based line of the offending node, or None when unknown.
        field: dotted path of the field, e.g. ``scenes[0].shots[2].duration``.
        message: what is wrong and what is allowed.
    """

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ManifestError(PipelineError):
    """The manifest is invalid. Holds every issue found, not only the first.

    Args:
        issues: the problems, each naming file, line and field.
    """

    def __init__(self, issues: Sequence[ManifestIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @classmethod
    def single(cls, file: str, line: int | None, field: str, message: str) -> ManifestError:
        """Build an error with exactly one issue."""
        return cls([ManifestIssue(file, line, field, message)])


class UsageError(PipelineError):
    """The command cannot act on what it was given; nothing was sent or written (exit 2).

    Examples: a path that is not a run directory; a ``--simulate`` rehearsal's run directory
    continued without ``--simulate`` (its jobs exist only in simulators), or a real run's
    directory continued with it.
    """


class CheckpointError(PipelineError):
    """The checkpoint cannot be read safely, or a write/fsync failed: stop all paid calls."""


class LockedError(CheckpointError):
    """Another runner holds the lock on this run directory."""


class ErrorContext(TypedDict, total=False):
    """Context carried by every :class:`ProviderError` (all optional keywords)."""

    provider: str
    shot: str
    status: int | None
    provider_message: str


class ProviderError(PipelineError):
    """A provider call did not succeed.

    Args:
        message: human-readable text (already free of secrets).
        provider: registry name of the provider, e.g. ``"venice"``.
        shot: shot id, when known.
        status: HTTP status, when there was a response.
        provider_message: the provider's own error text, when it sent one.
    """

    def __init__(self, message: str, **ctx: Unpack[ErrorContext]) -> None:
        super().__init__(message)
        self.provider = ctx.get("provider", "")
        self.shot = ctx.get("shot", "")
        self.status = ctx.get("status")
        self.provider_message = ctx.get("provider_message", "")


class NotSent(ProviderError):
    """The request provably never reached the provider (connect refused, DNS): retry is safe."""


class Rejected(ProviderError):
    """The provider definitely refused the request and charged nothing."""


class Ambiguous(ProviderError):
    """The request may have been accepted (timeout after send, reset, 5xx, unparsable 2xx)."""


class RateLimited(ProviderError):
    """HTTP 429 or equivalent. ``retry_after`` is the provider's wait in seconds (None: unknown)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, **ctx: Unpack[ErrorContext]
    ) -> None:
        super().__init__(message, **ctx)
        self.retry_after = retry_after


class JobFailed(ProviderError):
    """The provider finished the job as failed. ``refunded`` is True/False/None (unknown)."""

    def __init__(
        self, message: str, *, refunded: bool | None = None, **ctx: Unpack[ErrorContext]
    ) -> None:
        super().__init__(message, **ctx)
        self.refunded = refunded


class FetchError(ProviderError):
    """The result could not be fetched or failed verification (size cap, magic, hash, expiry).

    ``expired`` is True when the URL is gone (403/404/410) and should be refreshed by polling.
    ``rejected`` is True when the result itself is refused (above the size cap, not a video, a
    URL pointing at a private address): fetching again cannot help, and it is never resubmitted.
    """

    def __init__(
        self,
        message: str,
        *,
        expired: bool = False,
        rejected: bool = False,
        **ctx: Unpack[ErrorContext],
    ) -> None:
        super().__init__(message, **ctx)
        self.expired = expired
        self.rejected = rejected
