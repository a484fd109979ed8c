"""A simulated S3-compatible object store, served in-process for ``--simulate`` rehearsals.

``pipeline run --simulate`` serves it beside the provider simulators (same process, same event
loop, a loopback port of its own) and points the run's object storage at it, so a rehearsal of
a manifest whose media must be uploaded needs no bucket, no ``AWS_*`` variable and no other
process. The run keeps its real storage code (``pipeline.transfer.storage`` over obstore): this
store speaks the part of the S3 API that code uses, path-style (``/<bucket>/<key>``):

- ``PUT`` (``If-None-Match: *`` honoured), ``GET``, ``HEAD``, ``DELETE`` of an object;
- ``POST /<bucket>?delete`` (DeleteObjects: obstore's delete);
- multipart uploads (``POST ?uploads``, ``PUT ?partNumber&uploadId``, ``POST ?uploadId``,
  ``DELETE ?uploadId``), which obstore uses for files over 5 MiB.

Every request must be signed with AWS Signature Version 4 by the store's access key and its
secret, drawn at random when the store is made (one per process): header-signed requests, or
presigned URLs (an HMAC over the method, the object's path, the query with its expiry, and the
host). An unsigned, tampered or expired request is refused with S3's 403 XML
(:mod:`pipeline.sim.sigv4`). The provider simulators fetch the presigned URLs a job references
(``pipeline.sim.common.fetch_media``), as the real services do, so a URL that would not work
fails the rehearsal too. Buckets are created by their first upload; objects live in memory.

``app[STORE].log`` keeps ``(method, "bucket/key", status)`` of every request, ``GET
/_sim/storage`` serves it as JSON, and each request is logged (``pipeline`` logger, INFO:
``pipeline -v``) without its query string.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, unescape

from aiohttp import web

from pipeline.sim import sigv4
from pipeline.sim.common import Handler, serve

log = logging.getLogger("pipeline")

#: The store's access key id (not a secret; the secret is drawn per store).
ACCESS_KEY = "PIPELINESIMSTORAGE"
REGION = "us-east-1"
OCTETS = "application/octet-stream"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(slots=True)
class StoredObject:
    """One object: its bytes, type, ETag (quoted) and when it was written (Unix seconds)."""

    data: bytes
    content_type: str
    etag: str
    modified: float


@dataclass(slots=True)
class Upload:
    """A multipart upload in progress: where it goes, its type, its parts by number."""

    bucket: str
    key: str
    content_type: str
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class StoreState:
    """Everything the store holds; tests reach it as ``app[STORE]``.

    Attributes:
        access_key, secret, region: what requests must be signed with.
        objects: ``(bucket, key) -> StoredObject``.
        uploads: multipart upload id -> :class:`Upload`.
        log: ``(method, "bucket/key", status)`` of every request, in order.
        skew_s: seconds added to the wall clock (tests move time forward to expire URLs).
    """

    access_key: str = ACCESS_KEY
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    region: str = REGION
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    skew_s: float = 0.0

    def now(self) -> float:
        """The store's clock (Unix seconds)."""
        return time.time() + self.skew_s

    def served(self, method: str) -> list[str]:
        """``bucket/key`` of every ``method`` request answered 2xx, in order."""
        return [what for m, what, status in self.log if m == method and 200 <= status < 300]


STORE = web.AppKey("store", StoreState)


@dataclass(frozen=True, slots=True)
class ServedStore:
    """A running store: where it listens, the keys to sign with, and its ``app``."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str
    app: web.Application

    @property
    def state(self) -> StoreState:
        """The store's objects and request log."""
        return self.app[STORE]


def make_app(state: StoreState | None = None) -> web.Application:
    """The store as an aiohttp application (a fresh :class:`StoreState` unless given)."""
    app = web.Application(middlewares=[_logged])
    app[STORE] = state or StoreState()
    app.router.add_get("/_sim/storage", _ledger, name="sim-storage")
    app.router.add_route("*", "/{bucket}", _bucket, name="bucket")
    app.router.add_route("*", "/{bucket}/{key:.+}", _object, name="object")
    return app


@asynccontextmanager
async def running(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[ServedStore]:
    """Serve a new store on ``host:port`` (0: a free port) until the block exits.

    Yields:
        The :class:`ServedStore` (its endpoint is ``http://host:port``).
    """
    app = make_app()
    async with serve(app, host, port) as origin:
        state = app[STORE]
        yield ServedStore(origin, state.access_key, state.secret, state.region, app)


@web.middleware
async def _logged(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.match_info.route.name in ("object", "bucket"):
        what = request.path.lstrip("/")
        request.app[STORE].log.append((request.method, what, response.status))
        log.info("simulated storage: %s /%s -> %d", request.method, what, response.status)
    return response


async def _ledger(request: web.Request) -> web.Response:
    state = request.app[STORE]
    entries = [{"method": m, "object": what, "status": st} for m, what, st in state.log]
    return web.json_response(entries)


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """S3's XML error (headers only for HEAD, as S3 answers)."""
    if request.method == "HEAD":
        return web.Response(status=status)
    key = escape(request.match_info.get("key", ""))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message><Key>{key}</Key>"
        f"<RequestId>{secrets.token_hex(8)}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _xml(body: str) -> web.Response:
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + body
    return web.Response(text=text, content_type="application/xml")


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def _refused(request: web.Request, state: StoreState) -> web.Response | None:
    """S3's refusal of a request not signed by the store's key (or expired), else None."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    signed = sigv4.Signed(request.method, raw_path, raw_query, _headers(request))
    try:
        sigv4.verify(signed, {state.access_key: state.secret}, state.now())
    except sigv4.Denied as exc:
        return _error(request, exc.status, exc.code, exc.message)
    return None


async def _bucket(request: web.Request) -> web.StreamResponse:
    """``POST /<bucket>?delete`` (DeleteObjects) and ``HEAD /<bucket>`` (it exists)."""
    state = request.app[STORE]
    refused = _refused(request, state)
    if refused is not None:
        return refused
    bucket = request.match_info["bucket"]
    if request.method == "HEAD":
        return web.Response()
    if request.method != "POST" or "delete" not in request.query:
        return _error(request, 501, "NotImplemented", "only DeleteObjects is simulated here")
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    deleted = []
    for found in re.findall(rb"<Key>(.*?)</Key>", body, re.S):
        key = unescape(found.decode())
        state.objects.pop((bucket, key), None)
        deleted.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
    return _xml(f"<DeleteResult>{''.join(deleted)}</DeleteResult>")


async def _object(request: web.Request) -> web.StreamResponse:
    state = request.app[STORE]
    refused = _refused(request, state)
    if refused is not None:
        return refused
    query = dict(sigv4.query_pairs(request.raw_path.partition("?")[2]))
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    method = request.method
    if method in ("GET", "HEAD"):
        return _get(request, state.objects.get((bucket, key)))
    if method == "DELETE":
        if "uploadId" in query:
            state.uploads.pop(query["uploadId"], None)
        else:
            state.objects.pop((bucket, key), None)
        return web.Response(status=204)
    if method == "POST" and "uploads" in query:
        upload_id = secrets.token_hex(16)
        kind = request.headers.get("Content-Type", OCTETS)
        state.uploads[upload_id] = Upload(bucket, key, kind)
        return _xml(
            f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
            f"<Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
            "</InitiateMultipartUploadResult>"
        )
    if method not in ("PUT", "POST"):
        return _error(request, 405, "MethodNotAllowed", f"{method} is not supported here")
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    if method == "POST" and "uploadId" in query:
        return _complete(request, state, query["uploadId"], data)
    if method == "POST":
        return _error(request, 501, "NotImplemented", "only multipart uploads are simulated")
    return _put(request, state, query, data)


def _put(
    request: web.Request, state: StoreState, query: dict[str, str], data: bytes
) -> web.Response:
    """``PutObject``, or ``UploadPart`` when the query names an upload."""
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    if "uploadId" in query:
        upload = state.uploads.get(query["uploadId"])
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            return _error(request, 404, "NoSuchUpload", "The specified upload does not exist")
        number = query.get("partNumber", "")
        if not number.isdigit() or not 1 <= int(number) <= 10_000:
            msg = "Part number must be an integer between 1 and 10000, inclusive"
            return _error(request, 400, "InvalidArgument", msg)
        upload.parts[int(number)] = data
        return web.Response(headers={"ETag": _etag(data)})
    if request.headers.get("If-None-Match") == "*" and (bucket, key) in state.objects:
        return _error(request, 412, "PreconditionFailed", "the object already exists")
    kind = request.headers.get("Content-Type", OCTETS)
    state.objects[(bucket, key)] = StoredObject(data, kind, _etag(data), state.now())
    return web.Response(headers={"ETag": _etag(data)})


def _headers(request: web.Request) -> Callable[[str], Sequence[str]]:
    return lambda name: request.headers.getall(name, [])


async def _body(request: web.Request) -> bytes | web.Response:
    """The request body, checked against its signed SHA-256 when it names one."""
    chunks = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        chunks += chunk
    data = bytes(chunks)
    claimed = request.headers.get("x-amz-content-sha256", "")
    if _HEX64.match(claimed) and hashlib.sha256(data).hexdigest() != claimed:
        msg = "The provided 'x-amz-content-sha256' header does not match what was computed"
        return _error(request, 400, "XAmzContentSHA256Mismatch", msg)
    return data


def _complete(request: web.Request, state: StoreState, upload_id: str, body: bytes) -> web.Response:
    """``CompleteMultipartUpload``: the listed parts, in order, become the object."""
    upload = state.uploads.get(upload_id)
    if upload is None:
        return _error(request, 404, "NoSuchUpload", "The specified upload does not exist")
    parts = upload.parts
    numbers = [int(n) for n in re.findall(rb"<PartNumber>\s*(\d+)\s*</PartNumber>", body)]
    if not numbers or any(n not in parts for n in numbers):
        return _error(request, 400, "InvalidPart", "a listed part was not uploaded")
    data = b"".join(parts[n] for n in numbers)
    joined = b"".join(bytes.fromhex(_etag(parts[n])[1:-1]) for n in numbers)
    digest = hashlib.md5(joined, usedforsecurity=False)
    etag = f'"{digest.hexdigest()}-{len(numbers)}"'
    state.objects[(upload.bucket, upload.key)] = StoredObject(
        data, upload.content_type, etag, state.now()
    )
    del state.uploads[upload_id]
    return _xml(
        f"<CompleteMultipartUploadResult><Bucket>{escape(upload.bucket)}</Bucket>"
        f"<Key>{escape(upload.key)}</Key><ETag>{escape(etag)}</ETag>"
        "</CompleteMultipartUploadResult>"
    )


def _get(request: web.Request, obj: StoredObject | None) -> web.Response:
    if obj is None:
        return _error(request, 404, "NoSuchKey", "The specified key does not exist.")
    headers = {
        "ETag": obj.etag,
        "Last-Modified": email.utils.formatdate(obj.modified, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Type": obj.content_type,
    }
    return web.Response(body=obj.data, headers=headers)
