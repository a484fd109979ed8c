"""Local media files: type sniffed from magic bytes (never the extension), size and content hash.

``sniff(head)`` recognises the containers users put in manifests: PNG, JPEG, WebP, GIF, BMP
(images); MP4/MOV/M4V, WebM/Matroska (video); MP3, WAV, OGG, FLAC, M4A (audio).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import MediaRole

_HEAD = 64


def sniff(head: bytes) -> str | None:
    """The MIME type the first bytes of a file announce (``image/png``...), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:2] == b"BM" and len(head) >= 14:
        return "image/bmp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"fLaC":
        return "audio/flac"
    return None


def role_of(mime: str) -> MediaRole | None:
    """The reference role a MIME type implies (image, video or audio), or None."""
    kind = mime.split("/", 1)[0]
    return {
        "image": MediaRole.REFERENCE_IMAGE,
        "video": MediaRole.REFERENCE_VIDEO,
        "audio": MediaRole.REFERENCE_AUDIO,
    }.get(kind)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A local file's content facts: ``sha256`` hex, ``size`` bytes, sniffed ``mime`` (or None)."""

    sha256: str
    size: int
    mime: str | None


def inspect_file(path: Path) -> FileInfo:
    """Hash and sniff ``path`` (synchronous; reads the file once in 1 MiB blocks).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            if not head:
                head = block[:_HEAD]
            digest.update(block)
            size += len(block)
    return FileInfo(sha256=digest.hexdigest(), size=size, mime=sniff(head))
