r"""AWS Signature Version 4 as S3 checks it: header-signed requests and presigned URLs.

The simulated object store (:mod:`pipeline.sim.objectstore`) refuses what S3 refuses: no
signature, another access key, a signature that does not match the method, path, query and
signed headers (a tampered URL), an expired presigned URL, or a request dated too far from now.
Written from AWS's "Authenticating Requests (AWS Signature Version 4)" pages for S3: the
canonical request is ``METHOD\nURI\nQUERY\nHEADERS\nSIGNED\nPAYLOAD`` with the URI as sent
(S3 does not encode it twice) and every query name and value URI-encoded and sorted; the string
to sign is ``AWS4-HMAC-SHA256\n<date>\n<scope>\n<sha256 of the canonical request>``; the key is
HMAC-SHA256 chained over ``AWS4<secret>``, date, region, ``s3``, ``aws4_request``.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
#: Longest a presigned URL may be valid (7 days), as S3 allows.
MAX_EXPIRES_S = 604_800
#: Largest difference between a header-signed request's date and the server's clock (s).
MAX_SKEW_S = 900


class Denied(Exception):
    """A request S3 would refuse: ``status`` (403 or 400), ``code`` and ``message`` of its XML."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Signed:
    """The request as received, reduced to what its signature covers.

    Attributes:
        method: ``GET``, ``PUT``...
        raw_path: the path exactly as sent (still percent-encoded), without the query.
        raw_query: the query string exactly as sent (no ``?``).
        header: ``name (lower case) -> values`` of the request's headers.
    """

    method: str
    raw_path: str
    raw_query: str
    header: Callable[[str], Sequence[str]]


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """``a=1&b`` -> ``[("a", "1"), ("b", "")]``, each decoded once (``+`` stays ``+``)."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{n}={v}" for n, v in sorted((_encode(n), _encode(v)) for n, v in pairs))


def _amz_time(text: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise Denied(
            403, "AccessDenied", "X-Amz-Date is not a date like 20250101T000000Z"
        ) from None


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The SigV4 signing key of ``secret`` for one day (``YYYYMMDD``), region and service."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify(request: Signed, keys: Mapping[str, str], now: float) -> None:
    """Check ``request``'s signature (Authorization header or presigned query) like S3.

    Args:
        request: the received request.
        keys: access key id -> secret access key of the accounts the store knows.
        now: the server's clock (Unix seconds).

    Raises:
        Denied: 403 ``AccessDenied`` (unsigned, expired, malformed), ``InvalidAccessKeyId``,
            ``SignatureDoesNotMatch`` or ``RequestTimeTooSkewed``; 400
            ``AuthorizationQueryParametersError`` (expiry out of range).
    """
    pairs = query_pairs(request.raw_query)
    query = dict(pairs)
    auth = next(iter(request.header("authorization")), "")
    if query.get("X-Amz-Algorithm") == ALGORITHM:  # a presigned URL
        fields = {
            "Credential": query.get("X-Amz-Credential", ""),
            "SignedHeaders": query.get("X-Amz-SignedHeaders", ""),
            "Signature": query.get("X-Amz-Signature", ""),
        }
        date = query.get("X-Amz-Date", "")
        payload = UNSIGNED
        pairs = [(n, v) for n, v in pairs if n != "X-Amz-Signature"]
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise Denied(403, "AccessDenied", "X-Amz-Expires is not a number") from None
        if not 1 <= expires <= MAX_EXPIRES_S:
            msg = f"X-Amz-Expires must be between 1 and {MAX_EXPIRES_S} seconds"
            raise Denied(400, "AuthorizationQueryParametersError", msg)
        if now > _amz_time(date) + expires:
            raise Denied(403, "AccessDenied", "Request has expired")
    elif auth.startswith(ALGORITHM + " "):
        fields = dict(
            item.strip().partition("=")[::2] for item in auth[len(ALGORITHM) + 1 :].split(",")
        )
        date = next(iter(request.header("x-amz-date")), "")
        payload = next(iter(request.header("x-amz-content-sha256")), "")
        if not payload:
            raise Denied(400, "InvalidRequest", "Missing required header x-amz-content-sha256")
        if abs(now - _amz_time(date)) > MAX_SKEW_S:
            msg = "The difference between the request time and the server's time is too large"
            raise Denied(403, "RequestTimeTooSkewed", msg)
    else:
        raise Denied(403, "AccessDenied", "Anonymous access is not allowed: sign the request")
    key_id, day, region, service, end = ([*fields["Credential"].split("/"), "", "", "", ""])[:5]
    secret = keys.get(key_id)
    if secret is None:
        msg = "The AWS Access Key Id you provided does not exist in our records"
        raise Denied(403, "InvalidAccessKeyId", msg)
    if day != date[:8] or service != "s3" or end != "aws4_request":
        raise Denied(403, "AccessDenied", "the credential scope does not match the request date")
    signed = fields["SignedHeaders"].split(";") if fields["SignedHeaders"] else []
    if "host" not in signed:
        raise Denied(403, "AccessDenied", "the host header must be signed")
    headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in request.header(name))}\n" for name in signed
    )
    canonical = "\n".join(
        [
            request.method,
            request.raw_path or "/",
            _canonical_query(pairs),
            headers,
            ";".join(signed),
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"{ALGORITHM}\n{date}\n{scope}\n{digest}"
    expected = hmac.new(signing_key(secret, day, region), to_sign.encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), fields.get("Signature", "")):
        msg = "The request signature we calculated does not match the signature you provided"
        raise Denied(403, "SignatureDoesNotMatch", msg)
