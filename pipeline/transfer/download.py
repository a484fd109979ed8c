"""Streamed, capped, verified, atomic writing of a finished video into the run directory.

Order (README, resume semantics)::

    <final>.part (O_CREAT|O_EXCL|O_NOFOLLOW) <- stream, count, sha256, cap
    check size against Content-Length, check the container magic (``ftyp`` at offset 4)
    fsync(part) -> playable? (pipeline.transfer.playable: demuxed, first and last frames, duration)
    -> record(artifact) (the caller's durable ``fetched`` event)
    os.replace(part, final) -> fsync(directory)

A file under a final name is therefore always complete and matches its ``fetched`` record. Any
failure removes the ``.part`` file and raises :class:`pipeline.errors.FetchError`. A small body
(under ``FLUSH_BYTES``) is held in memory and checked first: its playability check (from
memory) and the creation, writing and fsync of its part file are one worker-thread hop. A large
one is copied into a few 4 MiB slots as it is read; a hashing thread and a writing thread
(which creates the part file first) take each slot beside the reading
(:mod:`pipeline.transfer.writebehind`), then the fsynced part file is checked in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from pipeline._util.fsutil import fsync_dir, replacing
from pipeline.errors import FetchError
from pipeline.models import Artifact, Download
from pipeline.transfer import playable
from pipeline.transfer.writebehind import PartFile, WriteBehind

#: Container signatures accepted as "a video": ISO BMFF (MP4/MOV) and Matroska/WebM.
_MAGIC_OFFSET4 = b"ftyp"
_MAGIC_EBML = b"\x1a\x45\xdf\xa3"

#: A final video's sidecar: ``shots/<id>.json`` (shot, fingerprint, job, sha256, size...).
SIDECAR_SUFFIX = ".json"


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

    A body of less than ``FLUSH_BYTES`` is checked once read, then its part file is created,
    written, hashed and fsynced in one worker-thread hop (a rejected body never touches the
    disk). A larger one is hashed and written beside the reading by a :class:`WriteBehind`
    (the event loop only reads and copies into bounded slots): from the first byte when its
    Content-Length says so, else once ``FLUSH_BYTES`` are read.
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
    out = PartFile(final, part)
    digest = hashlib.sha256()
    size = 0
    head = b""
    pending: list[bytes] = []
    writer: WriteBehind | None = None
    published = False
    try:
        if download.size is not None and download.size >= FLUSH_BYTES:
            writer = WriteBehind(out, digest)  # announced large: behind from the start
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
            if size >= FLUSH_BYTES:  # a large body: hashed and written behind the reading
                writer = WriteBehind(out, digest)
                await writer.extend(pending)  # copied into the slots as well
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
    out: PartFile, pending: list[bytes], digest: Any, expect: playable.Expected | None
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
#: :class:`WriteBehind` (without a Content-Length: as soon as this much is read).
FLUSH_BYTES = 4 * 1024 * 1024


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
