"""Streamed, capped, verified, atomic writing of a finished video into the run directory.

Order (design.md §4 fetch, reliability.md §3.2)::

    <final>.part (O_CREAT|O_EXCL|O_NOFOLLOW) <- stream, count, sha256, cap
    check size against Content-Length, check the container magic (``ftyp`` at offset 4)
    fsync(part) -> record(artifact) (the caller's durable ``fetched`` event)
    os.replace(part, final) -> fsync(directory)

A file under a final name is therefore always complete and matches its ``fetched`` record. Any
failure removes the ``.part`` file and raises :class:`pipeline.errors.FetchError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio

from pipeline.errors import FetchError
from pipeline.fsutil import fsync_dir, write_all
from pipeline.models import Artifact, Download

#: Container signatures accepted as "a video": ISO BMFF (MP4/MOV) and Matroska/WebM.
_MAGIC_OFFSET4 = b"ftyp"
_MAGIC_EBML = b"\x1a\x45\xdf\xa3"

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def looks_like_video(head: bytes) -> bool:
    """True when the first bytes are an MP4/MOV (``ftyp`` box) or WebM/Matroska header."""
    return head[4:8] == _MAGIC_OFFSET4 or head[:4] == _MAGIC_EBML


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def file_sha256(path: Path) -> str:
    """sha256 hex of a file, computed in a worker thread."""
    return await anyio.to_thread.run_sync(_sha256_file, path)


def _archive_existing(final: Path) -> None:
    """Move an existing final file aside (``superseded/``) so it is never overwritten."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_file():
        raise FetchError(f"refusing to replace {final}: not a regular file")
    digest = _sha256_file(final)[:12]
    archive = final.parent / "superseded"
    archive.mkdir(exist_ok=True)
    os.replace(final, archive / f"{final.stem}.{digest}{final.suffix}")
    fsync_dir(final.parent)


async def write_verified(
    download: Download,
    final: Path,
    *,
    max_bytes: int,
    record: Callable[[Artifact], Awaitable[None]],
) -> Artifact:
    """Stream ``download`` into ``final`` atomically and verified.

    Args:
        download: the byte stream and its announced size.
        final: destination path (its directory must exist and be inside the run directory).
        max_bytes: size cap; a larger Content-Length is refused before reading the body.
        record: awaited after the part file is fsynced and before the rename (the durable
            ``fetched`` checkpoint event).

    Returns:
        The artifact (final path, size in bytes, sha256 hex).

    Raises:
        FetchError: cap exceeded, short body, not a video, or an I/O error. The part file is gone.
    """
    if download.size is not None and download.size > max_bytes:
        raise FetchError(
            f"result is {download.size} bytes, above the cap of {max_bytes}", rejected=True
        )
    part = final.with_name(final.name + ".part")
    try:
        fd = await anyio.to_thread.run_sync(_open_part, final, part)
    except OSError as exc:
        raise FetchError(f"cannot create {part}: {exc.strerror}") from exc
    digest = hashlib.sha256()
    size = 0
    head = b""
    pending: list[bytes] = []
    buffered = 0
    published = False
    writer = _Pipeline()
    try:
        async for chunk in download.chunks:
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"result exceeds the cap of {max_bytes} bytes", rejected=True)
            if len(head) < 12:
                head += chunk[: 12 - len(head)]
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= _FLUSH_BYTES:  # hashed and written behind the reading
                await writer.submit(fd, pending, digest)
                pending, buffered = [], 0
        await writer.drain()
        if download.size is not None and size != download.size:
            raise FetchError(f"short body: got {size} of {download.size} announced bytes")
        if not looks_like_video(head):
            raise FetchError(
                "result is not an MP4/WebM video (bad container signature)", rejected=True
            )
        closing, fd = fd, -1  # _write_chunks closes it, whatever happens
        await anyio.to_thread.run_sync(_write_chunks, closing, pending, digest, True)
        artifact = Artifact(path=final, size=size, sha256=digest.hexdigest())
        await record(artifact)
        await anyio.to_thread.run_sync(_publish, part, final)
        published = True
        return artifact
    except OSError as exc:
        raise FetchError(f"writing {part.name} failed: {exc.strerror}") from exc
    finally:
        with anyio.CancelScope(shield=True):
            await writer.close()  # no batch may still be writing to ``fd`` when it closes
        if fd >= 0:
            os.close(fd)
        if not published:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()


class _Pipeline:
    """One batch hashed and written in a dedicated thread while the next one is read.

    Hashing (sha256) and writing take about as long as reading from a fast network; doing
    them behind the read keeps a large download near the speed of a plain read loop. Batches
    stay in order (a single worker); at most one is in flight, so memory stays bounded.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._job: Future[None] | None = None

    async def submit(self, fd: int, chunks: list[bytes], digest: Any) -> None:
        """Start writing ``chunks`` once the previous batch is done (its errors raise here)."""
        await self.drain()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-write")
        self._job = self._pool.submit(_write_chunks, fd, chunks, digest)

    async def drain(self) -> None:
        """Wait for the batch in flight; re-raise its ``OSError``."""
        job, self._job = self._job, None
        if job is not None:
            await anyio.to_thread.run_sync(job.result)

    async def close(self) -> None:
        """Finish (ignoring errors: the caller is already failing) and stop the thread."""
        with contextlib.suppress(OSError):
            await self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


#: Bytes buffered before a worker thread hashes and writes them (one thread hop per batch).
_FLUSH_BYTES = 4 * 1024 * 1024


def _open_part(final: Path, part: Path) -> int:
    """Refuse a planted final name, drop a stale part, create the part (``O_EXCL|O_NOFOLLOW``).

    The directory is created when missing and refused when it is a symbolic link.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.parent.is_symlink():
        raise FetchError(f"{final.parent} is a symbolic link; refusing to write through it")
    _refuse_non_regular(final)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # a stale part from an interrupted fetch; never published
    return os.open(part, _OPEN_FLAGS, 0o644)


def _write_chunks(fd: int, chunks: list[bytes], digest: Any, last: bool = False) -> None:
    """Hash and write ``chunks``; with ``last``, also fsync and (always) close ``fd``."""
    try:
        for chunk in chunks:
            digest.update(chunk)
            write_all(fd, chunk)
        if last:
            os.fsync(fd)
    finally:
        if last:
            os.close(fd)


def _refuse_non_regular(final: Path) -> None:
    """Never write through a symlink or over a directory planted at the output name."""
    if final.is_symlink() or (final.exists() and not final.is_file()):
        raise FetchError(f"refusing to replace {final}: not a regular file")


def _publish(part: Path, final: Path) -> None:
    _archive_existing(final)
    os.replace(part, final)
    fsync_dir(final.parent)


def finish_interrupted(final: Path, size: int, sha256: str) -> bool:
    """Complete a fetch that was recorded but interrupted before its rename.

    A final file of the recorded ``size`` is trusted without re-hashing (it can only have been
    published after verification). Otherwise a ``.part`` file matching ``sha256`` is renamed.

    Returns:
        True when ``final`` now holds the recorded video; False when it must be fetched again.
    """
    part = final.with_name(final.name + ".part")
    if final.is_file() and not final.is_symlink() and final.stat().st_size == size:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        return True
    if part.is_file() and _sha256_file(part) == sha256:
        _publish(part, final)
        return True
    return False
