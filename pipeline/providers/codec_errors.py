"""What a provider codec raises when an answer cannot become typed data (no I/O).

One small vocabulary for every codec (``venice``, ``seedance2``, ``newapi``, ``relaydance``)::

    MalformedAnswer(ValueError)   the answer is not the documented shape
    ProviderRefused(Exception)    the provider answered with an error envelope (``code``,
                                  ``message``) where a result was expected

These are not :class:`~pipeline.errors.ProviderError`: the codec does not know what an answer
means for money. Each adapter catches them and maps them onto :mod:`pipeline.errors` by stage
(e.g. a malformed 2xx submit answer is ``Ambiguous``: the job may exist and be charged).

A status string a codec does not know is not an error: it is read as RUNNING, its raw text
kept, until the runner's poll deadline (docs/providers/README.md §6, docs/reliability.md R17).

Provider text may quote secrets: the exception *messages* (``str(exc)``) are redacted; the raw
fields (``code``, ``message``) are the provider's data, to redact before showing.
"""

from __future__ import annotations

from pipeline._util.redaction import redact_provider_text as redact


class MalformedAnswer(ValueError):
    """The answer is not the documented shape (not JSON, not an object, a field missing or odd).

    Carries only its message, written by the codec: which problem, never the raw body.
    """


class ProviderRefused(Exception):
    """The provider answered with an error envelope where a result was expected.

    E.g. a 2xx ``{"success": false, "error": {code, message}}`` (seedance2.ink).

    Attributes:
        code: the provider's error code (the codec's placeholder when it sent none).
        message: the provider's error text ("" when none); raw: redact before showing.

    ``str(exc)`` is ``"code: message"`` (or ``code`` alone), redacted.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return redact(f"{self.code}: {self.message}" if self.message else self.code)
