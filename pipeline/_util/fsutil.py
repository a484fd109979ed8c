"""Small durable-file helpers: the checkpoint, downloads and every rebuilt output (sync)."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Fsync a directory so a create or rename inside it survives a power loss.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readable_by_all(path: Path) -> None:
    """Add read permission for group and others to the regular file ``path`` (e.g. 0600 -> 0644).

    For an output the storyboard page links that an older version wrote 0600 and a rebuild
    keeps unchanged. A symbolic link or a missing file is left alone.

    Raises:
        OSError: the file's mode cannot be changed.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    mode = st.st_mode & 0o7777
    if stat.S_ISREG(st.st_mode) and mode & 0o044 != 0o044:
        os.chmod(path, mode | 0o044)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (looping over partial writes; no copy).

    Raises:
        OSError: a write failed.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextmanager
def replacing(
    dest: Path, *, mode: int | None = None, prefix: str | None = None, suffix: str = ".tmp"
) -> Iterator[Path]:
    """A temporary path beside ``dest`` that replaces it atomically when the block succeeds.

    The caller writes the whole file at the yielded path; on normal exit it is fsynced, given
    ``mode`` (None: mkstemp's 0600) and renamed over ``dest``. On an exception it is removed and
    ``dest`` is untouched, so readers only ever see the old file or the complete new one.

    Raises:
        OSError: the temporary file cannot be created, synced or renamed.
    """
    fd, name = tempfile.mkstemp(prefix=prefix or f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


#: Temporary files :func:`replacing` leaves behind when a rebuild is killed mid-way.
TEMPORARIES = (".animatic-*.mp4", ".contact-*.png", ".render-*.mp4", ".*.tmp", ".report.json.*")


def sweep_temporaries(directory: Path, *, older_than_s: float = 600.0) -> list[Path]:
    """Remove the temporary files of interrupted rebuilds in ``directory`` (not recursive).

    Only files matching :data:`TEMPORARIES` and untouched for ``older_than_s`` seconds go: a
    rebuild still running in another process (``pipeline storyboard``) keeps its file.

    Returns:
        The paths removed.
    """
    cutoff = time.time() - older_than_s
    removed = []
    for pattern in TEMPORARIES:
        for path in directory.glob(pattern):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue  # gone already, or not ours to remove: never a reason to stop a run
    return removed
