"""Object storage for the upload stage: content-addressed objects and presigned GET URLs (obstore).

Manifest ``storage: {url, endpoint_url, region, presign_ttl}``; ``url`` is an obstore store URL
(``s3://bucket/prefix``, also ``gs://...`` and ``az://...``; R2 and MinIO are ``s3://`` with an
``endpoint_url``). Credentials come only from the standard environment variables the store reads
itself (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``GOOGLE_SERVICE_ACCOUNT``, ``AZURE_STORAGE_ACCOUNT_KEY``...); never from the manifest.

Objects are named ``<prefix>/<sha256>.<ext>`` (extension from the sniffed type), so one file used
by many shots or many runs is stored once: :meth:`ObjectStorage.ensure` HEADs before it PUTs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import from_url

from pipeline.errors import ManifestError, PipelineError
from pipeline.settings import StorageSettings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

_EXT = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/mp4": "m4a",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class StorageError(PipelineError):
    """An object-store call failed. ``retryable`` is True for network and server errors."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def parse_ttl(text: str) -> float:
    """``"24h"`` -> 86400.0 seconds; units s, m, h, d (none: seconds).

    Raises:
        ValueError: not a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration like 24h, 90m or 3600s: {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def object_name(sha256: str, mime: str | None) -> str:
    """``<sha256>.<ext>``: the content-addressed name of a file (``bin`` for unknown types)."""
    return f"{sha256}.{_EXT.get(mime or '', 'bin')}"


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A presigned GET URL and when it stops working (Unix seconds)."""

    url: str
    expires_at: float


class ObjectStorage:
    """Uploads and presigns in one bucket/prefix. Counters ``puts``/``heads`` feed stats and tests.

    Args:
        settings: the manifest's ``storage`` section.
        file: the manifest path (for error messages).

    Raises:
        ManifestError: the URL or TTL is not usable.
    """

    def __init__(self, settings: StorageSettings, *, file: str = "manifest") -> None:
        try:
            self.ttl_s = parse_ttl(settings.presign_ttl)
        except ValueError as exc:
            raise ManifestError.single(file, None, "storage.presign_ttl", str(exc)) from None
        config: S3Config = {}
        options: ClientConfig = {}
        if settings.url.startswith(("s3://", "s3a://")):
            if settings.endpoint_url:
                config["endpoint"] = settings.endpoint_url
                if settings.endpoint_url.startswith("http://"):
                    options["allow_http"] = True
            if settings.region:
                config["region"] = settings.region
        try:
            self.store: Any = from_url(
                settings.url, config=config or None, client_options=options or None
            )
        except (ObstoreError, ValueError) as exc:
            raise ManifestError.single(
                file, None, "storage.url", f"unusable store URL: {exc}"
            ) from None
        self.url = settings.url
        self.puts = 0
        self.heads = 0

    async def exists(self, name: str) -> bool:
        """Whether object ``name`` is already stored (HEAD).

        Raises:
            StorageError: the store could not answer.
        """
        self.heads += 1
        try:
            await obstore.head_async(self.store, name)
        except FileNotFoundError:
            return False
        except (ObstoreError, OSError) as exc:
            raise _error("HEAD", name, exc) from None
        return True

    async def ensure(self, path: Path, name: str) -> bool:
        """Store ``path`` as ``name`` unless it is already there.

        Returns:
            True when this call uploaded it, False when it existed.

        Raises:
            StorageError: HEAD or PUT failed.
        """
        if await self.exists(name):
            return False
        self.puts += 1
        try:
            await obstore.put_async(self.store, name, path)
        except (ObstoreError, OSError) as exc:
            raise _error("PUT", name, exc) from None
        return True

    async def sign(self, name: str, ttl_s: float | None = None) -> SignedUrl:
        """A presigned GET URL for ``name``, valid ``ttl_s`` seconds (default: the presign TTL).

        Raises:
            StorageError: the store cannot sign (e.g. a local or memory store).
        """
        ttl = ttl_s if ttl_s is not None else self.ttl_s
        try:
            url = await obstore.sign_async(self.store, "GET", name, timedelta(seconds=ttl))
        except (ObstoreError, OSError, TypeError) as exc:
            raise _error("sign", name, exc) from None
        return SignedUrl(url=str(url), expires_at=time.time() + ttl)


def _error(op: str, name: str, exc: BaseException) -> StorageError:
    text = str(exc).split("\n", 1)[0]
    permanent = any(
        word in text.lower() for word in ("denied", "forbidden", "unauthenticated", "403")
    )
    text = re.sub(r"\?[^\s'\"]*", "?…", text)  # never print a signature
    return StorageError(f"object storage {op} {name} failed: {text}", retryable=not permanent)
