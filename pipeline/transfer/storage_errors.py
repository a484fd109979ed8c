"""What an object-store failure means: :class:`StorageError`, and obstore's errors classified.

Kinds: credentials, denied, unreachable, bucket, region, other; one line each, never a secret or
a presigned signature.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

from pipeline._util.redaction import redact
from pipeline.errors import PipelineError

#: What went wrong, as :attr:`StorageError.kind`: ``credentials`` (none found), ``denied`` (the
#: credentials were refused), ``unreachable`` (no connection or a server error), ``bucket`` (it
#: does not exist), ``region`` (the bucket lives elsewhere), ``other``.
KINDS = ("credentials", "denied", "unreachable", "bucket", "region", "other")

S3_KEYS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys)"
)
_CREDENTIAL_HINTS = {
    "s3": S3_KEYS_HINT,
    "gs": "set GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS) to a key file",
    "az": "set AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or a client id/secret/tenant)",
}
#: Signs that a failure happened while looking for credentials at a metadata service.
_METADATA = re.compile(
    r"169\.254\.|fd00:ec2|metadata\.google|latest/api/token|meta-data|/metadata/identity", re.I
)
_URL = re.compile(r"https?://[^/\s\"'<>]+")
_DENIED = re.compile(
    r"accessdenied|access denied|forbidden|invalidaccesskeyid|signaturedoesnotmatch|"
    r"status code: 40[13]"
)


class StorageError(PipelineError):
    """An object-store call failed.

    Args:
        message: one line naming the store and what happened (no secrets, no signatures).
        retryable: True for network and server errors (trying again may help).
        kind: one of :data:`KINDS`.
        hint: what to set or fix (empty when there is nothing specific); ``str(error)`` ends
            with it.
    """

    def __init__(
        self, message: str, *, retryable: bool, kind: str = "other", hint: str = ""
    ) -> None:
        super().__init__(f"{message}: {hint}" if hint else message)
        self.detail = message
        self.retryable = retryable
        self.kind = kind
        self.hint = hint


def classify(
    op: str, name: str, exc: BaseException, *, url: str, endpoint: str | None, scheme: str
) -> StorageError:
    """The :class:`StorageError` an obstore failure of ``op`` (``"PUT"``...) on ``name`` means.

    Args:
        op: the operation (for the message).
        name: the object's name (for the message).
        exc: what obstore raised.
        url: the store URL (``s3://bucket/prefix``).
        endpoint: its endpoint URL, if any.
        scheme: ``s3``, ``gs`` or ``az`` (which credential variables to name).
    """
    full = redact(str(exc))
    text = full.split("\n", 1)[0]
    low = full.lower()
    where = f"{url} at {endpoint}" if endpoint else url
    if _METADATA.search(full):  # the store went looking for instance credentials
        return StorageError(
            f"object storage {where}: no credentials found (on {op} {name})",
            retryable=False,
            kind="credentials",
            hint=_CREDENTIAL_HINTS.get(scheme, "set the store's credential variables"),
        )
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return StorageError(
            f"object storage {where}: bucket {urlsplit(url).netloc!r} does not exist",
            retryable=False,
            kind="bucket",
            hint="create it, or fix storage.url (and storage.endpoint_url)",
        )
    if "region" in low and ("wrong" in low or "redirect" in low or "expecting" in low):
        return StorageError(
            f"object storage {where}: the bucket is in another region (on {op} {name})",
            retryable=False,
            kind="region",
            hint="set storage.region to the bucket's region",
        )
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or _DENIED.search(low):
        hint = "check the store's credentials and their permissions on the bucket"
        if scheme == "s3":
            hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
        return StorageError(
            f"object storage {where}: access denied on {op} {name}",
            retryable=False,
            kind="denied",
            hint=hint,
        )
    reason = _network_reason(low)
    if reason is not None:
        match = _URL.search(text)
        target = match.group(0) if match else (endpoint or url)
        return StorageError(
            f"object storage {url}: cannot reach {target} ({reason}) on {op} {name}",
            retryable=True,
            kind="unreachable",
            hint="check storage.endpoint_url and that the service is running"
            if endpoint
            else "check the network",
        )
    server = re.search(r"status code: 5\d\d", text) is not None
    return StorageError(
        f"object storage {where}: {op} {name} failed: {text}",
        retryable=server,
        kind="unreachable" if server else "other",
    )


def _network_reason(low: str) -> str | None:
    """Why no connection was made, from an obstore error text (lower case), or None."""
    if "connectionrefused" in low or "connection refused" in low:
        return "connection refused"
    if "dns error" in low or "failed to lookup" in low or "name or service not known" in low:
        return "host not found"
    if "timed out" in low or "kind: timeout" in low or "operation timed out" in low:
        return "timed out"
    if "error sending request" in low or "kind: connect" in low:
        return "could not connect"
    return None
