"""Streamed, capped, verified, atomic writing of a finished video into the run directory.

Order (README, resume semantics)::

    <final>.part (O_CREAT|O_EXCL|O_NOFOLLOW) <- stream, count, sha256, cap
    check size against Content-Length, check the container magic (``ftyp`` at offset 4)
    fsync(part) -> playable? (pipeline.transfer.playable: demuxed, first and last frames, duration)
    -> record(artifact) (the caller's durable ``fetched`` event)
    os.replace(part, final) -> fsync(directory)

A file under a final name is therefore always complete and matches its ``fetched`` record. Any
failure removes the ``.part`` file and raises :class:`pipeline.errors.FetchError`. A small body
(under ``_FLUSH_BYTES``) is held in memory and checked first: its playability check (from
memory) and the creation, writing and fsync of its part file are one worker-thread hop. A large
one is hashed and written behind the reading by a thread that creates the part file first, then
the fsynced part file is checked in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from pipeline._util.fsutil import fsync_dir, replacing, write_all
from pipeline.errors import FetchError
from pipeline.models import Artifact, Download
from pipeline.transfer import playable

#: Container signatures accepted as "a video": ISO BMFF (MP4/MOV) and Matroska/WebM.
_MAGIC_OFFSET4 = b"ftyp"
_MAGIC_EBML = b"\x1a\x45\xdf\xa3"

#: A final video's sidecar: ``shots/<id>.json`` (shot, fingerprint, job, sha256, size...).
SIDECAR_SUFFIX = ".json"

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
    side = sidecar_path(final)
    if side.is_file() and not side.is_symlink():  # the video's witness moves with it
        os.replace(side, archive / f"{final.stem}.{digest}{SIDECAR_SUFFIX}")
    fsync_dir(archive)
    fsync_dir(final.parent)


def sidecar_path(final: Path) -> Path:
    """``shots/<id>.json`` beside ``shots/<id>.mp4``: what the video is (:func:`write_verified`)."""
    return final.with_suffix(SIDECAR_SUFFIX)


def _write_sidecar(final: Path, doc: Mapping[str, object], artifact: Artifact) -> None:
    """Write the video's sidecar atomically and durably (before the video gets its final name)."""
    body = {
        **doc,
        "sha256": artifact.sha256,
        "bytes": artifact.size,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    side = sidecar_path(final)
    with replacing(side, mode=0o644) as tmp:
        tmp.write_text(json.dumps(body, sort_keys=True) + "\n")


async def write_verified(
    download: Download,
    final: Path,
    *,
    max_bytes: int,
    record: Callable[[Artifact, Callable[[], None]], Awaitable[None]],
    expect: playable.Expected | None = None,
    sidecar: Mapping[str, object] | None = None,
) -> Artifact:
    """Stream ``download`` into ``final`` atomically and verified.

    A body of less than ``_FLUSH_BYTES`` is checked once read, then its part file is created,
    written, hashed and fsynced in one worker-thread hop (a rejected body never touches the
    disk). A larger one is hashed and written behind the reading by a :class:`_WriteBehind`:
    from the first byte when its Content-Length says so, else once ``_FLUSH_BYTES`` are read.
    With ``expect``, the video must also be playable (:func:`pipeline.transfer.playable.check`, in a
    worker thread) before it is recorded.

    Args:
        download: the byte stream and its announced size.
        final: destination path (its directory must exist and be inside the run directory).
        max_bytes: size cap; a larger Content-Length is refused before reading the body.
        record: ``record(artifact, publish)``, awaited once the part file is fsynced: it must
            make the artifact's record durable (the ``fetched`` checkpoint event), *then* call
            ``publish()`` (blocking: rename to the final name, fsync the directory), e.g. as
            the checkpoint's ``then`` action, which shares the record's thread hop. If it
            returns without publishing, the rename is done here.
        expect: the shot's asked duration and provider: the video is demuxed end to end, its
            first and last frames decoded and its duration compared (None: only the container
            signature is checked).
        sidecar: what the video is (shot, fingerprint, provider, model, job; never a secret or
            a URL): written with its ``sha256``, ``bytes`` and ``fetched_at`` as
            ``<final stem>.json`` (atomically, fsynced) in the publish step, after any earlier
            video and its sidecar moved to ``superseded/`` and before the rename, so a final
            video always has its sidecar (``pipeline repair`` rebuilds a lost log from them).

    Returns:
        The artifact (final path, size in bytes, sha256 hex).

    Raises:
        FetchError: cap exceeded, short body, not a video, or an I/O error. The part file is gone.
        pipeline.transfer.playable.UnplayableVideo: (a FetchError, retryable) with ``expect``: not a
            playable video of the asked duration. The part file is gone.
    """
    if download.size is not None and download.size > max_bytes:
        raise FetchError(
            f"result is {download.size} bytes, above the cap of {max_bytes}", rejected=True
        )
    part = final.with_name(final.name + ".part")
    out = _PartFile(final, part)
    digest = hashlib.sha256()
    size = 0
    head = b""
    pending: list[bytes] = []
    writer: _WriteBehind | None = None
    published = False
    try:
        if download.size is not None and download.size >= _FLUSH_BYTES:
            writer = _WriteBehind(out, digest, [])  # announced large: behind from the start
        async for chunk in download.chunks:
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"result exceeds the cap of {max_bytes} bytes", rejected=True)
            if len(head) < 12:
                head += chunk[: 12 - len(head)]
            if writer is not None:
                await writer.add(chunk)
                continue
            pending.append(chunk)
            if size >= _FLUSH_BYTES:  # a large body: hashed and written behind the reading
                writer = _WriteBehind(out, digest, pending)
                pending = []
        _check_body(size, download.size, head)
        if writer is None:  # check + create + write + hash + fsync + close: one hop
            await anyio.to_thread.run_sync(_check_then_finish, out, pending, digest, expect)
        else:
            await writer.finish()
            if expect is not None:
                await anyio.to_thread.run_sync(playable.check, part, expect)
        artifact = Artifact(path=final, size=size, sha256=digest.hexdigest())
        await _record_then_publish(record, artifact, part, final, sidecar)
        published = True
        return artifact
    except OSError as exc:
        raise FetchError(f"writing {part.name} failed: {exc.strerror}") from exc
    finally:
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await writer.close()  # the thread is done: nothing writes to the part any more
        if not published and out.created:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()


def _check_then_finish(
    out: _PartFile, pending: list[bytes], digest: Any, expect: playable.Expected | None
) -> None:
    """Check a small body from memory (when ``expect``), then write, hash and fsync it."""
    if expect is not None:
        playable.check(b"".join(pending), expect)
    out.finish(pending, digest)


def _check_body(size: int, announced: int | None, head: bytes) -> None:
    """Refuse a body shorter than its Content-Length, or one that is not a video."""
    if announced is not None and size != announced:
        raise FetchError(f"short body: got {size} of {announced} announced bytes")
    if not looks_like_video(head):
        raise FetchError("result is not an MP4/WebM video (bad container signature)", rejected=True)


#: A body of less than this is written in one hop once read and checked; a larger one goes to a
#: :class:`_WriteBehind` thread (without a Content-Length: as soon as this much is read).
_FLUSH_BYTES = 4 * 1024 * 1024
#: The rest of a large body is copied into reusable slots of this size, handed over when full...
_SLOT_BYTES = 1024 * 1024
#: ... and at most this many exist: reading waits for one to be written (memory stays bounded).
_SLOTS = 4
#: Bytes written between two hints to the kernel: write this back, evict the range before.
_WRITEBACK_BYTES = 8 * 1024 * 1024

_Data = bytes | memoryview


class _PartFile:
    """The ``.part`` file, created on its first write (in a worker thread), then owned by it."""

    def __init__(self, final: Path, part: Path) -> None:
        self.final = final
        self.part = part
        self.fd = -1
        self.created = False
        self._written = 0
        self._synced = 0  # bytes whose writeback was started
        self._dropped = 0  # bytes evicted from the page cache (if written back)

    def write(self, chunks: Sequence[_Data], digest: Any) -> None:
        """Create the part if needed (``_open_part``), then hash and write ``chunks``."""
        if self.fd < 0:
            try:
                self.fd = _open_part(self.final, self.part)
            except OSError as exc:
                raise FetchError(f"cannot create {self.part}: {exc.strerror}") from exc
            self.created = True
        for chunk in chunks:
            digest.update(chunk)
            write_all(self.fd, chunk)
            self._written += len(chunk)
        if self._written - self._synced >= _WRITEBACK_BYTES:
            # the new range starts going to the disk; the one before, on it by now, is evicted
            _write_back(self.fd, self._dropped, self._written - self._dropped)
            self._dropped, self._synced = self._synced, self._written

    def finish(self, chunks: Sequence[_Data], digest: Any) -> None:
        """Hash and write the last ``chunks``, fsync, and close whatever happens."""
        try:
            self.write(chunks, digest)
            os.fsync(self.fd)
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor if open."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _write_back(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the part file back to the disk, and evict what already is.

    On Linux ``POSIX_FADV_DONTNEED`` starts the writeback of the dirty pages of the range and
    evicts its clean ones (pages still dirty or under writeback stay). Applied to each new
    range and once more a range later, the final fsync has little left to wait for, and a large
    video streams through a few recycled pages of the page cache instead of filling it with
    fresh ones (on the 2-core benchmark VM, writing 1 GB into fresh pages costs 1-3 s of CPU
    instead of 0.25 s). A hint only: durability still comes from that fsync.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


#: One unit of work: buffers to hash and write, the slot to release after, last (fsync, close).
_Item = tuple[Sequence[_Data], bytearray | None, bool]


class _WriteBehind:
    """One thread hashing and writing a large body, in order, while the event loop reads on.

    sha256 and the page-cache copy cost about as much CPU as the reading: done here, on the
    other core, a large download stays near the speed of a plain read loop. A first batch read
    before the body was known to be large is handed over as read; after it the event loop
    copies the body into ``_SLOTS`` reusable slots and drops each chunk at once. Holding
    megabytes of chunk objects until they are written made the allocator return and re-fault
    memory all the time (25,000 page faults per 256 MB against 3,000: more CPU than the copy).
    Memory: that first batch plus ``_SLOTS`` slots. The thread owns the part file: it creates
    it with the first item and closes it when done.
    """

    def __init__(self, out: _PartFile, digest: Any, first: list[bytes]) -> None:
        self._out = out
        self._digest = digest
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below shared with the thread
        self._free: list[bytearray] = []
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._stopping = False
        self._slots = 0  # allocated (event loop only)
        self._slot: bytearray | None = None  # being filled
        self._filled = 0
        threading.Thread(target=self._main, name="pipeline-write", daemon=True).start()
        self._queue.put((first, None, False))

    async def add(self, chunk: bytes) -> None:
        """Copy ``chunk`` into the slots, handing each full one over; may wait for a free slot.

        Raises:
            Exception: what hashing or writing an earlier batch raised (``OSError``...).
        """
        done = 0
        while done < len(chunk):
            slot = self._slot
            if slot is None:
                slot = self._slot = await self._take()
                self._filled = 0
            n = min(len(chunk) - done, _SLOT_BYTES - self._filled)
            if done == 0 and n == len(chunk):
                slot[self._filled : self._filled + n] = chunk
            else:
                slot[self._filled : self._filled + n] = memoryview(chunk)[done : done + n]
            self._filled += n
            done += n
            if self._filled == _SLOT_BYTES:
                self._queue.put(([memoryview(slot)], slot, False))
                self._slot = None

    async def finish(self) -> None:
        """Hash and write the rest, fsync and close the part; wait for all of it.

        Raises:
            Exception: what hashing, writing, syncing or closing raised.
        """
        slot, self._slot = self._slot, None
        rest: list[_Data] = [memoryview(slot)[: self._filled]] if slot is not None else []
        self._queue.put((rest, slot, True))
        await self._until_ended(errors=True)

    async def close(self) -> None:
        """Stop (what is still queued is skipped) and wait for the thread; the part is closed."""
        self._stopping = True
        self._queue.put(None)
        await self._until_ended(errors=False)

    async def _take(self) -> bytearray:
        """A free slot: a released one, a new one while fewer than ``_SLOTS``, else wait."""
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._free:
                    return self._free.pop()
                if self._slots < _SLOTS:
                    self._slots += 1
                    return bytearray(_SLOT_BYTES)
                if self._ended:
                    raise RuntimeError("the write-behind thread has stopped")
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def _until_ended(self, *, errors: bool) -> None:
        """Wait for the thread to finish (with ``errors``, raise its first error at once)."""
        while True:
            with self._lock:
                if errors and self._error is not None:
                    raise self._error
                if self._ended:
                    return
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _main(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                chunks, slot, last = item
                error = None
                if self._error is None and not self._stopping:
                    try:
                        if last:
                            self._out.finish(chunks, self._digest)
                        else:
                            self._out.write(chunks, self._digest)
                    except BaseException as exc:  # handed to the event loop
                        error = exc
                del chunks, item  # the slot's views: released before it is reused
                self._settle(slot, error, ended=last)
                if last:
                    return
        finally:
            with contextlib.suppress(OSError):
                self._out.close()  # still open only when stopped early
            self._settle(None, None, ended=True)

    def _settle(self, slot: bytearray | None, error: BaseException | None, *, ended: bool) -> None:
        """Release ``slot``, note an error or the end, and wake the event loop if it waits."""
        with self._lock:
            if slot is not None:
                self._free.append(slot)
            self._error = self._error or error
            self._ended = self._ended or ended
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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


def _refuse_non_regular(final: Path) -> None:
    """Never write through a symlink or over a directory planted at the output name."""
    if final.is_symlink() or (final.exists() and not final.is_file()):
        raise FetchError(f"refusing to replace {final}: not a regular file")


async def _record_then_publish(
    record: Callable[[Artifact, Callable[[], None]], Awaitable[None]],
    artifact: Artifact,
    part: Path,
    final: Path,
    sidecar: Mapping[str, object] | None = None,
) -> None:
    """``record(artifact, publish)``; publish here (in a worker thread) if it did not."""
    done = False
    side = (sidecar, artifact) if sidecar is not None else None

    def publish() -> None:
        nonlocal done
        done = True
        _publish(part, final, side)

    await record(artifact, publish)
    if not done:
        await anyio.to_thread.run_sync(_publish, part, final, side)


def _publish(
    part: Path, final: Path, sidecar: tuple[Mapping[str, object], Artifact] | None = None
) -> None:
    _archive_existing(final)
    if sidecar is not None:
        _write_sidecar(final, *sidecar)
        fsync_dir(final.parent)  # the sidecar's name is durable before the video has its own
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
