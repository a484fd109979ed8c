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
    """A local file's content facts.

    Attributes:
        sha256: content hash (hex).
        size: bytes.
        mime: type sniffed from the magic bytes, or None when unknown.
        width / height: pixels, for images and videos that could be decoded.
        duration_s: seconds, for video and audio that could be decoded.
        problem: why a file of a known type could not be decoded (corrupt or truncated).
    """

    sha256: str
    size: int
    mime: str | None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    problem: str | None = None


def _image_facts(path: Path) -> tuple[int | None, int | None, str | None]:
    from PIL import Image, UnidentifiedImageError  # here: a manifest without images needs none

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.width, img.height, None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return None, None, f"cannot be decoded as an image ({exc})"


def _av_facts(path: Path) -> tuple[int | None, int | None, float | None, str | None]:
    import av  # here: a manifest without video or audio needs no PyAV

    try:
        with av.open(str(path)) as container:
            width = height = None
            if container.streams.video:
                ctx = container.streams.video[0].codec_context
                width, height = ctx.width, ctx.height
            duration = container.duration / 1_000_000 if container.duration else None
            if duration is None:
                lengths = [
                    float(s.duration * s.time_base)
                    for s in container.streams
                    if s.duration is not None and s.time_base is not None
                ]
                duration = max(lengths) if lengths else None
            return width, height, duration, None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        return None, None, None, f"cannot be decoded ({exc})"


def inspect_file(path: Path) -> FileInfo:
    """Hash, sniff and measure ``path`` (synchronous; reads the file once in 1 MiB blocks).

    Images get their pixel size (Pillow), video and audio their duration (PyAV).

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
    mime = sniff(head)
    info = FileInfo(sha256=digest.hexdigest(), size=size, mime=mime)
    if mime is None:
        return info
    if mime.startswith("image/"):
        width, height, problem = _image_facts(path)
        return FileInfo(info.sha256, size, mime, width, height, None, problem)
    width, height, duration, problem = _av_facts(path)
    return FileInfo(info.sha256, size, mime, width, height, duration, problem)
