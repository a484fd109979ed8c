"""Who may use the review app: the address it binds, the hosts it answers, the session token.

- It binds to loopback (``127.0.0.1``) unless the user names another address (``--host``):
  :func:`check_bind` refuses a non-loopback address that was not asked for explicitly.
- It answers only requests whose ``Host`` is ``localhost``, an IP address or the ``--host``
  name (:func:`host_allowed`): a web page whose domain name is made to resolve to 127.0.0.1
  (DNS rebinding) gets 403, so it can never read the page and its token.
- Every state-changing request (any method but GET and HEAD) must carry the session's token
  (generated at start, embedded in the page, sent back as the ``X-Review-Token`` header) and
  must not come from another origin (``Origin``, ``Sec-Fetch-Site``): else 403. A cross-site
  form or ``fetch`` can neither pick nor re-roll.

Responses carry a strict Content-Security-Policy (scripts, styles and media from the app only)
and no caching of pages or API answers.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pipeline.errors import UsageError

TOKEN_HEADER = "X-Review-Token"
_SAFE = frozenset({"GET", "HEAD"})
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def new_token() -> str:
    """A fresh session token (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, explicit: bool) -> None:
    """Refuse to bind a non-loopback ``host`` unless the user named it (``--host``).

    Raises:
        UsageError: ``host`` is not loopback and ``explicit`` is False.
    """
    if not is_loopback(host) and not explicit:
        raise UsageError(
            f"refusing to serve the review app on {host}: it is not a loopback address; "
            f"pass --host {host} to mean it (anyone who can reach it can watch the run)"
        )


def _split_host(value: str) -> str:
    """The host name of a ``Host`` header value (without the port)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(header: str, bound: str) -> bool:
    """Whether a request with ``Host: header`` may be answered by an app bound to ``bound``."""
    name = _split_host(header)
    if not name:
        return False
    if name == "localhost" or name == bound.strip("[]").lower():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False  # a domain name: maybe DNS rebinding
    return True


def _same_origin(request: web.Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def guard(token: str, bound: str) -> Middleware:
    """The middleware enforcing the rules of the module docstring (403 when broken)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), bound):
            raise web.HTTPForbidden(text="this review app answers only its own address\n")
        if request.method not in _SAFE:
            if not _same_origin(request):
                raise web.HTTPForbidden(text="cross-site request refused\n")
            sent = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                raise web.HTTPForbidden(text="missing or wrong review token\n")
        response = await handler(request)
        if response.prepared:  # a stream (server-sent events) set its own headers
            return response
        headers = response.headers
        headers.setdefault("Content-Security-Policy", _CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        return response

    return middleware
