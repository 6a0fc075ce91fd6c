"""Who may talk to the server: the token, and the Host and Origin checks.

With a token, every HTTP request and WebSocket handshake must present it, reads
included: ``Authorization: Bearer T`` (API clients, relays), the ``waddle-token-PORT``
cookie (browsers), or ``?token=T`` in the URL, which also sets that cookie (HttpOnly,
SameSite=Strict) so a person opens the dashboard once with the token, as with Jupyter.
Browsers send a host's cookies to every port of it, so the name carries the server's
port, as Jupyter's does: two servers on one host do not overwrite each other's cookie.
Comparisons are constant-time (``hmac.compare_digest``).

Without a token the server only binds loopback (``Settings`` refuses anything else), and
a request must name a loopback host in its ``Host`` header: a web page that rebinds its
own DNS name to 127.0.0.1 gets 403 instead of your runs. A WebSocket handshake whose
``Origin`` is another site is refused in both cases.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from waddle.web.settings import LOOPBACK_NAMES

COOKIE_PREFIX = "waddle-token"


class TokenAuth:
    """ASGI middleware enforcing the rules above before any endpoint runs."""

    def __init__(self, app: ASGIApp, token: str | None, extra_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.hosts = frozenset(LOOPBACK_NAMES) | frozenset(extra_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = self._refusal(scope, headers)
        if problem is not None:
            await _refuse(scope, receive, send, *problem)
            return
        if self.token and scope["type"] == "http" and _query_token(scope) is not None:
            send = _setting_cookie(send, cookie_name(scope), self.token.decode())
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        host = headers.get("host")
        if self.token is None and host is not None and _hostname(host) not in self.hosts:
            return (
                403,
                "host_not_allowed",
                f"this server answers to loopback names only, not {host!r}; "
                "open it as http://127.0.0.1:PORT/",
            )
        origin = headers.get("origin")
        if scope["type"] == "websocket" and origin and host and urlsplit(origin).netloc != host:
            return 403, "origin_not_allowed", f"WebSocket from another origin ({origin}) refused"
        if self.token is not None and not self._authorized(scope, headers):
            return (
                401,
                "unauthorized",
                "this server needs its token: send 'Authorization: Bearer TOKEN', or open "
                "the URL with ?token=TOKEN once in a browser",
            )
        return None

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        for presented in _credentials(scope, headers):
            if hmac.compare_digest(presented.encode("utf-8", "replace"), self.token):
                return True
        return False


def _hostname(host: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:8080``, ``::1`` of ``[::1]:8080``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def cookie_name(scope: Scope) -> str:
    """``waddle-token-PORT`` for the port the server listens on (the plain prefix on a
    Unix socket)."""
    server = scope.get("server")
    port = server[1] if server else None
    return f"{COOKIE_PREFIX}-{port}" if port is not None else COOKIE_PREFIX


def _query_token(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "token":
            return value
    return None


def _credentials(scope: Scope, headers: Headers) -> list[str]:
    """Every token the request presents (header, cookie, query); any one may match."""
    found = []
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value:
        found.append(value.strip())
    cookie_header = headers.get("cookie")
    if cookie_header:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except CookieError:
            cookies = SimpleCookie()
        name = cookie_name(scope)
        if name in cookies:
            found.append(unquote(cookies[name].value))
    query = _query_token(scope)
    if query is not None:
        found.append(query)
    return found


def _setting_cookie(send: Send, name: str, token: str) -> Send:
    cookie = f"{name}={quote(token, safe='')}; HttpOnly; SameSite=Strict; Path=/"

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message["headers"], (b"set-cookie", cookie.encode())],
            }
        await send(message)

    return wrapped


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, error: str, detail: str
) -> None:
    body = orjson.dumps({"error": error, "detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error})
