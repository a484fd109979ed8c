"""Object storage for the upload stage: content-addressed objects and presigned GET URLs (obstore).

Manifest ``storage: {url, endpoint_url, region, presign_ttl}``; ``url`` is an obstore store URL
(``s3://bucket/prefix``, also ``gs://...`` and ``az://...``; R2 and MinIO are ``s3://`` with an
``endpoint_url``). Credentials come only from the standard environment variables the store reads
itself (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``GOOGLE_SERVICE_ACCOUNT``, ``AZURE_STORAGE_ACCOUNT_KEY``...); never from the manifest.

For ``s3://`` stores the environment must name a credential source (static keys, a container or
web-identity role, ``AWS_SKIP_SIGNATURE``); otherwise every call fails at once with a
:class:`StorageError` naming the variables to set, instead of the store falling back to the cloud
instance metadata service (unreachable off-cloud, slow to time out). Machines that do get their
credentials from that service opt in by setting ``AWS_METADATA_ENDPOINT`` to its URL. ``~/.aws``
profiles are not read.

``--simulate`` passes a :class:`StoreAccess` instead: the same code talks S3 to the in-process
simulated store with that store's keys, and no environment variable is read for it.

Objects are named ``<prefix>/<sha256>.<ext>`` (extension from the sniffed type), so one file used
by many shots or many runs is stored once: :meth:`ObjectStorage.ensure` HEADs before it PUTs.
Every failure is a :class:`StorageError` with a one-line message naming the store and what to
fix (see :data:`KINDS`); no query string (presigned signature) or secret is ever in it.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import from_url

from pipeline.errors import ManifestError
from pipeline.settings import StorageSettings
from pipeline.transfer.storage_errors import KINDS as KINDS
from pipeline.transfer.storage_errors import S3_KEYS_HINT, classify
from pipeline.transfer.storage_errors import StorageError as StorageError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

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

#: Environment variable groups, any complete one of which gives an S3 store credentials without
#: the instance metadata service (``AWS_METADATA_ENDPOINT`` opts in to that service).
_S3_SOURCES = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI",),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"),
    ("AWS_METADATA_ENDPOINT",),
)
_SCHEMES = {"s3a": "s3", "abfs": "az", "abfss": "az", "adl": "az", "azure": "az"}


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


def missing_s3_credentials(environ: Mapping[str, str]) -> str | None:
    """None when ``environ`` names an S3 credential source, else what is missing (one phrase)."""
    if any(all(environ.get(var) for var in group) for group in _S3_SOURCES):
        return None
    if environ.get("AWS_SKIP_SIGNATURE", "").lower() in ("1", "true", "yes"):
        return None  # anonymous requests, asked for explicitly
    key, secret = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
    for have, lack in ((key, secret), (secret, key)):
        if environ.get(have):
            return f"{lack} is not set (only {have} is)"
    return "no credentials in the environment"


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """An S3-compatible store reached with these keys instead of the environment's credentials.

    ``--simulate`` passes the in-process simulated store's (``pipeline.sim.objectstore``): the
    manifest's bucket and prefix are kept, its scheme, endpoint and region are replaced, and no
    ``AWS_*`` variable is needed. Its presigned URLs end with the process that serves it.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT`` (path-style requests).
        access_key_id, secret_access_key: the keys requests and presigned URLs are signed with.
        region: the signing region.
    """

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    def settings(self, manifest: StorageSettings) -> StorageSettings:
        """``manifest`` pointed at this store: ``s3://<bucket>/<prefix>``, endpoint, region."""
        parts = urlsplit(manifest.url)
        bucket = parts.netloc.split("@")[0] or "pipeline"
        return manifest.model_copy(
            update={
                "url": f"s3://{bucket}{parts.path}",
                "endpoint_url": self.endpoint_url,
                "region": self.region,
            }
        )


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
        max_retries: retries of one request inside the store (connection errors, 5xx).
        timeout_s: longest one request may take (None: the store's default); also bounds the
            connect phase.
        environ: where credentials are looked for (default: the process environment).
        access: use this store and its keys instead (:class:`StoreAccess`; ``--simulate``).

    Raises:
        ManifestError: the URL or TTL is not usable.
    """

    def __init__(
        self,
        settings: StorageSettings,
        *,
        file: str = "manifest",
        max_retries: int = 2,
        timeout_s: float | None = None,
        environ: Mapping[str, str] | None = None,
        access: StoreAccess | None = None,
    ) -> None:
        if access is not None:
            settings = access.settings(settings)
        try:
            self.ttl_s = parse_ttl(settings.presign_ttl)
        except ValueError as exc:
            raise ManifestError.single(file, None, "storage.presign_ttl", str(exc)) from None
        self.url = settings.url
        self.endpoint = settings.endpoint_url
        scheme = urlsplit(settings.url).scheme
        self.scheme = _SCHEMES.get(scheme, scheme)
        env = os.environ if environ is None else environ
        s3 = self.scheme == "s3" and access is None
        self.missing = missing_s3_credentials(env) if s3 else None
        config: S3Config = {}
        if access is not None:  # these keys win over any AWS_* variable obstore reads itself
            config["access_key_id"] = access.access_key_id
            config["secret_access_key"] = access.secret_access_key
            config["virtual_hosted_style_request"] = False
            config["skip_signature"] = False
            config["session_token"] = ""  # no AWS_SESSION_TOKEN of yours either
        options: ClientConfig = {}
        if self.scheme == "s3":
            if settings.endpoint_url:
                config["endpoint"] = settings.endpoint_url
                if settings.endpoint_url.startswith("http://"):
                    options["allow_http"] = True
            if settings.region:
                config["region"] = settings.region
        if timeout_s is not None:
            options["timeout"] = timedelta(seconds=timeout_s)
            options["connect_timeout"] = timedelta(seconds=min(timeout_s, 10.0))
        retry: RetryConfig = {"max_retries": max_retries, "retry_timeout": timedelta(seconds=60)}
        try:
            self.store: Any = from_url(
                settings.url,
                config=config or None,
                client_options=options or None,
                retry_config=retry,
            )
        except (ObstoreError, ValueError) as exc:
            raise ManifestError.single(
                file, None, "storage.url", f"unusable store URL: {exc}"
            ) from None
        self.puts = 0
        self.heads = 0

    @property
    def where(self) -> str:
        """The store for messages: its URL, and the endpoint when one is configured."""
        return f"{self.url} at {self.endpoint}" if self.endpoint else self.url

    def _ready(self) -> None:
        """Refuse every call when the environment has no credentials for the store.

        Raises:
            StorageError: ``kind="credentials"``, naming the variables to set.
        """
        if self.missing is not None:
            raise StorageError(
                f"object storage {self.where}: {self.missing}",
                retryable=False,
                kind="credentials",
                hint=S3_KEYS_HINT,
            )

    async def exists(self, name: str) -> bool:
        """Whether object ``name`` is already stored (HEAD).

        Raises:
            StorageError: the store could not answer.
        """
        self._ready()
        self.heads += 1
        try:
            await obstore.head_async(self.store, name)
        except FileNotFoundError:
            return False
        except (ObstoreError, OSError) as exc:
            raise self.error("HEAD", name, exc) from None
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
            raise self.error("PUT", name, exc) from None
        return True

    async def sign(self, name: str, ttl_s: float | None = None) -> SignedUrl:
        """A presigned GET URL for ``name``, valid ``ttl_s`` seconds (default: the presign TTL).

        Raises:
            StorageError: the store cannot sign (e.g. a local or memory store).
        """
        self._ready()
        ttl = ttl_s if ttl_s is not None else self.ttl_s
        try:
            url = await obstore.sign_async(self.store, "GET", name, timedelta(seconds=ttl))
        except (ObstoreError, OSError, TypeError) as exc:
            raise self.error("sign", name, exc) from None
        return SignedUrl(url=str(url), expires_at=time.time() + ttl)

    async def roundtrip(self) -> str:
        """Write, read back and delete a small test object (``.pipeline-preflight-<random>``).

        The caller bounds the wait; each request is bounded by the store's own timeouts too, and
        the delete is shielded from the caller's cancellation for at most 5 s.

        Returns:
            The test object's name (under the prefix); it is gone when this returns.

        Raises:
            StorageError: a step failed (the object is deleted when it was written).
        """
        self._ready()
        name = f".pipeline-preflight-{secrets.token_hex(8)}"
        data = b"pipeline preflight: safe to delete\n"
        try:
            await obstore.put_async(self.store, name, data)
        except (ObstoreError, OSError) as exc:
            raise self.error("PUT", name, exc) from None
        failure: StorageError | None = None
        try:
            got = await obstore.get_async(self.store, name)
            if bytes(await got.bytes_async()) != data:
                failure = StorageError(
                    f"object storage {self.where}: {name} read back different bytes",
                    retryable=False,
                    hint="check that storage.endpoint_url is an S3-compatible service",
                )
        except (ObstoreError, OSError) as exc:
            failure = self.error("GET", name, exc)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                try:
                    await obstore.delete_async(self.store, name)
                except (ObstoreError, OSError) as exc:
                    failure = failure or self.error("DELETE", name, exc)
        if failure is not None:
            raise failure
        return name

    def error(self, op: str, name: str, exc: BaseException) -> StorageError:
        """The :class:`StorageError` an obstore failure of ``op`` on ``name`` means (one line)."""
        return classify(op, name, exc, url=self.url, endpoint=self.endpoint, scheme=self.scheme)
