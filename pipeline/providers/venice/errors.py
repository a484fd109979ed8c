"""How Venice's error answers become :mod:`pipeline.errors` (docs/providers/venice.md §1.10, §1.11).

The generic status mapping (:func:`~pipeline.providers.http.status_error`) refined with
Venice's wait times (Retry-After, the ``x-ratelimit-*`` reset headers, the 30 s error-budget
lockout), hints for definite queue refusals, and the 409 Seedance face-consent refusal.

Provider facts cite ``[<provider>.md §n]``, a section of ``docs/providers/<provider>.md``
(its heading says whether the provider documents it or it was seen in real code);
``[inferred]`` marks a choice no source confirms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pipeline.errors import ProviderError, RateLimited, Rejected
from pipeline.providers.http import ApiResponse, redact, retry_after, status_error
from pipeline.providers.venice.codec import NAME, VeniceError

#: Hints appended to definite queue refusals [venice.md §1.4 queue errors, §1.10].
HINTS = {
    400: "invalid request (nothing charged)",
    401: "authentication failed or the model is Pro-only: check VENICE_API_KEY and the plan",
    402: "insufficient balance or spend limit: add credits at https://venice.ai/settings/api",
    403: "region blocked or API access disabled for this key",
    404: "unknown model or route",
    413: "JSON body above 35 MB: use smaller media or remote URLs",
    415: "unsupported media type",
    422: "content policy or media constraint (nothing charged)",
}
#: The error-budget lockout lasts 30 s [venice.md §1.11]; overloaded 429 defaults to 30 s
#: [venice.md §1.11].
_LOCKOUT_S = 30.0


def reset_seconds(raw: Mapping[str, str], now: float) -> float | None:
    """Seconds until the exhausted limit resets, from the ``x-ratelimit-*`` headers.

    The error budget (``x-ratelimit-remaining``/``-resets``) or the request limit
    (``-remaining-requests``/``-reset-requests``), whichever says 0 remain; the reset is a Unix
    time in seconds or milliseconds (both are documented) [venice.md §1.11].
    """
    headers = {k.lower(): v for k, v in raw.items()}
    pairs = (
        ("x-ratelimit-remaining", "x-ratelimit-resets"),
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    )
    for remaining, name in pairs:
        if headers.get(remaining) != "0":
            continue
        value = headers.get(name)
        try:
            stamp = float(value) if value is not None else None
        except ValueError:
            stamp = None
        if stamp is not None:
            stamp = stamp / 1000.0 if stamp > 1e11 else stamp  # ms vs s [venice.md §1.11]
            return max(0.0, stamp - now)
    return None


def wait_of(resp: ApiResponse, err: VeniceError) -> float | None:
    """How long a 429 asks us to wait, in seconds.

    Retry-After, else the reset headers, else 30 s when the body names the error-budget lockout
    or an overloaded model [venice.md §1.11].
    """
    wait = retry_after(resp.headers)
    if wait is None:
        wait = reset_seconds(resp.headers, time.time())
    if wait is None and ("failed attempts" in err.message or "overloaded" in err.message):
        wait = _LOCKOUT_S
    return wait


def venice_error(resp: ApiResponse, err: VeniceError, hint: str, shot: str) -> ProviderError:
    """The generic mapping (:func:`status_error`) with Venice's wait times and hints."""
    text = f"{err.message} -- {hint}" if hint else err.message
    exc = status_error(resp, text, provider=NAME, shot=shot)
    exc.provider_message = redact(err.message)
    if isinstance(exc, RateLimited) and exc.retry_after is None:
        exc.retry_after = wait_of(resp, err)
    return exc


def consent_refusal(resp: ApiResponse, err: VeniceError, shot: str, *, sent: bool) -> Rejected:
    """The refusal of a 409 needs_consent: the policy to read and what to do next.

    ``sent``: the attestation was already sent and Venice asked again.
    """
    policy = err.policy_text or "(no policy text returned)"
    roles = ", ".join(err.face_media_roles) or "media"
    action = (
        "the attestation was sent and Venice asked again: check the media or attest in the web app"
        if sent
        else "then add `consent: seedance` to the shot to attest it"
    )
    return Rejected(
        f"Venice needs Seedance face consent for {roles} (HTTP 409, nothing charged). Read the "
        f"policy (version {err.consent_version or '?'}, {err.docs_url or 'docs.venice.ai'}): "
        f"{redact(policy)} -- {action}.",
        provider=NAME,
        shot=shot,
        status=resp.status,
        provider_message=redact(err.message),
    )
