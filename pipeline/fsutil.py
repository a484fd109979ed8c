"""Small durable-file helpers shared by the checkpoint and the downloads (synchronous)."""

from __future__ import annotations

import os
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


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (looping over partial writes).

    Raises:
        OSError: a write failed.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
