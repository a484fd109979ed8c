"""Secrets never leave memory: one redactor for every line a person or a file will see.

The CLI registers each API key it reads (:func:`register`); :func:`redact` then removes

- the exact registered secret values,
- ``Authorization``/``Bearer`` credentials,
- the query strings of URLs (presigned signatures, one-time tokens),

and :class:`RedactingFormatter` applies it to every log record, tracebacks included. One-time
result URLs are kept only in the 0600 checkpoint (reliability.md R12, §3.8).
"""

from __future__ import annotations

import logging
import re

_SECRETS: set[str] = set()
_QUERY = re.compile(r"\?[^\s'\"<>]*")
_BEARER = re.compile(r"(?i)\b(bearer|authorization:)\s*[A-Za-z0-9._~+/=-]{4,}")
MASK = "***"


def register(secret: str | None) -> None:
    """Remember ``secret`` (an API key) so that :func:`redact` removes it everywhere."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    """``text`` without registered secrets, bearer credentials or URL query strings."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _BEARER.sub(rf"\1 {MASK}", _QUERY.sub("?…", text))


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback) passes :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then redact."""
        return redact(super().format(record))
