"""The upload stage: turn a shot's media into URLs its provider can use, each file handled once.

For every asset of a shot (first frame, end frame, references), by the provider's
:class:`~pipeline.providers.base.MediaPolicy`:

- a remote ``https://`` URL passes through unchanged;
- ``file://`` for a provider that reads local files (the ``local`` renderer);
- an inline ``data:`` URL when the provider accepts them and the shot's files together stay under
  its request limit (Venice: 35 MB of JSON);
- otherwise the file goes to object storage (:mod:`pipeline.transfer.storage`) under its content
hash and
  the provider gets a presigned GET URL that outlives the job's poll deadline.

Single flight: one resolution per (provider, content, mode) at a time inside a run; across runs
the store is asked (HEAD) before anything is PUT. Data URLs are built once per file and shared.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field, replace

import anyio

from pipeline.errors import NotSent, Rejected
from pipeline.models import Asset, MediaRef
from pipeline.providers.base import FILE, INLINE
from pipeline.transfer.storage import ObjectStorage, StorageError, object_name


@dataclass
class MediaResolver:
    """Resolves assets to :class:`MediaRef` for one run (see the module docstring).

    Attributes:
        storage: the run's object storage, or None when the manifest has none.
        min_validity_s: presigned URLs are made to stay valid at least this long.
    """

    storage: ObjectStorage | None = None
    min_validity_s: float = 3600.0
    _inline: dict[str, str] = field(default_factory=dict)

    async def resolve(self, asset: Asset, mode: str) -> MediaRef:
        """The reference for ``asset`` in ``mode`` (see :func:`mode_for`).

        Raises:
            Rejected: the file needs storage and there is none, or cannot be read.
            NotSent: a transient storage failure (retryable: uploads are idempotent).
        """
        if asset.url is not None:
            return MediaRef(role=asset.role, url=asset.url, mime=asset.mime)
        path = asset.path
        if path is None:
            raise Rejected("asset has neither a path nor a URL")
        if mode == FILE:
            return MediaRef(
                role=asset.role, url=path.as_uri(), sha256=asset.sha256, mime=asset.mime
            )
        if mode == INLINE:
            return MediaRef(
                role=asset.role,
                url=await self._data_url(asset),
                sha256=asset.sha256,
                mime=asset.mime,
            )
        if self.storage is None:
            raise Rejected(f"{path.name} must be uploaded, but the manifest has no `storage`")
        name = object_name(asset.sha256 or "", asset.mime)
        try:
            await self.storage.ensure(path, name)
            signed = await self.storage.sign(name, max(self.storage.ttl_s, self.min_validity_s))
        except StorageError as exc:
            if exc.retryable:
                raise NotSent(str(exc)) from exc
            raise Rejected(str(exc)) from exc
        return MediaRef(
            role=asset.role,
            url=signed.url,
            sha256=asset.sha256,
            mime=asset.mime,
            expires_at=signed.expires_at,
        )

    async def _data_url(self, asset: Asset) -> str:
        key = asset.sha256 or str(asset.path)
        cached = self._inline.get(key)
        if cached is None:
            assert asset.path is not None
            data = await anyio.Path(asset.path).read_bytes()
            encoded = await anyio.to_thread.run_sync(base64.b64encode, data)
            cached = f"data:{asset.mime or 'application/octet-stream'};base64,{encoded.decode()}"
            self._inline[key] = cached
        return cached


def usable(ref: MediaRef, min_validity_s: float) -> bool:
    """A recorded reference may be reused: not inline, and valid for ``min_validity_s`` more."""
    if ref.url.startswith("data:"):
        return False
    return ref.expires_at is None or ref.expires_at - time.time() > min_validity_s


def with_role(ref: MediaRef, asset: Asset) -> MediaRef:
    """``ref`` as used by ``asset`` (the same file may be a first frame here, a reference there)."""
    return ref if ref.role == asset.role else replace(ref, role=asset.role)
