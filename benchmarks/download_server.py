"""A loopback HTTP server of one large body, in its own process (the download benchmark's origin).

    python benchmarks/download_server.py SIZE

It builds the body (:func:`block` repeated, the first one starting with an MP4 signature) in a
file on tmpfs when there is one (else in memory), binds 127.0.0.1 on a free port, prints the
port on a line of its own, then answers every ``GET`` with ``200``, ``Content-Length`` and the
body (its first ``N`` bytes for ``GET /?bytes=N``): ``os.sendfile`` from the tmpfs file (the
pages are handed to the socket, not copied), else ``sendall`` of the blocks. One thread per
connection, ``Connection: close``.
It runs until its standard input closes (the benchmark ends it that way, or by a signal).

The server is kept out of the client's process and event loop, so the client measures its own
reading, hashing and writing only; it still takes CPU on the same machine (the kernel's loopback
copy is charged to the side that reads).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import tempfile
import threading
from pathlib import Path

#: The body is this block repeated (4 MiB of seeded noise), its first copy with a signature.
BLOCK_BYTES = 4 * 1024 * 1024
MAGIC = b"\x00\x00\x00\x18ftypisom"
TMPFS = Path("/dev/shm")


def block(first: bool = False) -> bytes:
    """One block of the body: seeded noise, behind an MP4 signature when ``first``."""
    noise = random.Random(16).randbytes(BLOCK_BYTES)
    return MAGIC + noise[len(MAGIC) :] if first else noise


def blocks(size: int) -> list[tuple[bytes, int]]:
    """The body of ``size`` bytes as ``(block, length)`` pieces, in order (two distinct blocks)."""
    head, rest = block(first=True), block()
    out, done = [], 0
    while done < size:
        n = min(BLOCK_BYTES, size - done)
        out.append((head if done == 0 else rest, n))
        done += n
    return out


def _body_file(size: int) -> Path | None:
    """The body in a tmpfs file (removed at exit), or None without tmpfs (or room on it)."""
    if not TMPFS.is_dir():
        return None
    room = os.statvfs(TMPFS)
    if room.f_bavail * room.f_frsize < 2 * size:  # a container's 64 MB /dev/shm
        return None
    fd, name = tempfile.mkstemp(prefix="pipeline-bench-body-", dir=TMPFS)
    with os.fdopen(fd, "wb") as fh:
        for data, n in blocks(size):
            fh.write(memoryview(data)[:n])
    return Path(name)


def _asked(request: bytes, size: int) -> int:
    """The length asked by the request line (``?bytes=N``, at most ``size``), else ``size``."""
    target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
    query = dict(p.split("=", 1) for p in target.partition("?")[2].split("&") if "=" in p)
    return min(size, int(query.get("bytes", size)))


def _serve_one(conn: socket.socket, body_size: int, path: Path | None) -> None:
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            got = conn.recv(65536)
            if not got:
                return
            request += got
        size = _asked(request, body_size)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
            + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        with contextlib.suppress(OSError):  # the client went away
            if path is not None:
                with path.open("rb") as fh:
                    offset = 0
                    while offset < size:
                        offset += os.sendfile(conn.fileno(), fh.fileno(), offset, size - offset)
            else:
                for data, n in blocks(size):
                    conn.sendall(memoryview(data)[:n])


def main() -> int:
    size = int(sys.argv[1])
    path = _body_file(size)
    try:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.listen(16)

        def accept() -> None:
            while True:
                conn, _ = listener.accept()
                args = (conn, size, path)
                threading.Thread(target=_serve_one, args=args, daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        print(listener.getsockname()[1], flush=True)
        sys.stdin.read()  # until the benchmark closes the pipe
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
