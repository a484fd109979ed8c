"""Secrets never leave memory: one redactor for every line a person or a file will see.

The CLI registers each API key it reads (:func:`register`); :func:`redact` then removes

- the exact registered secret values,
- ``Authorization``/``Bearer`` credentials,
- the query strings of URLs (presigned signatures, one-time tokens),

and :class:`RedactingFormatter` applies it to every log record, tracebacks included. One-time
result URLs are kept only in the 0600 checkpoint (README "Reliability", R12).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

_SECRETS: set[str] = set()
_ORDERED: tuple[str, ...] = ()  # longest first: a secret inside another is replaced after it
_QUERY = re.compile(r"\?[^\s'\"<>]*")
_BEARER = re.compile(r"(?i)\b(bearer|authorization:)\s*[A-Za-z0-9._~+/=-]{4,}")
MASK = "***"
#: Also masked in provider messages: any word after "bearer" or "key" (a token-like word).
_AFTER_KEYWORD = re.compile(r"(?i)(bearer|key)\s+[A-Za-z0-9._~+/=-]+")


def register(secret: str | None) -> None:
    """Remember ``secret`` (an API key) so that :func:`redact` removes it everywhere.

    Its URL-encoded form is remembered too (a provider may echo the key inside a URL).
    """
    if secret and len(secret) >= 4:
        global _ORDERED
        _SECRETS.update((secret, quote(secret, safe="")))
        _ORDERED = tuple(sorted(_SECRETS, key=len, reverse=True))


def scrub(value: Any) -> Any:
    """``value`` with every registered secret value replaced by ``***``, in every string inside it.

    Unlike :func:`redact` it keeps URL query strings (a one-time download link recorded in the
    0600 checkpoint must still work), so it is what the runner applies to everything a provider
    said before it is stored. Strings, and lists, tuples and dicts of them (recursively), are
    scrubbed; anything else is returned as it is. Costs nothing when no secret is registered.
    """
    if not _ORDERED:
        return value
    if isinstance(value, str):
        for secret in _ORDERED:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    return value


def redact(text: str) -> str:
    """``text`` without registered secrets, bearer credentials or URL query strings."""
    for secret in _ORDERED:
        text = text.replace(secret, MASK)
    return _BEARER.sub(rf"\1 {MASK}", _QUERY.sub("?…", text))


def redact_provider_text(text: str) -> str:
    """``text`` safe for messages: :func:`redact`, and more.

    Besides registered secrets, credentials and URL query strings, any token-like word after
    "bearer" or "key" is masked (provider error texts sometimes quote them).
    """
    return _AFTER_KEYWORD.sub(r"\1 ***", redact(text))


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback) passes :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then redact."""
        return redact(super().format(record))
