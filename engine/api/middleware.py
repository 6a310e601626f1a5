"""Pure ASGI middleware: auth (bearer key or the dashboard's session cookie), CSRF, and
the request body limit.

Auth runs first (outermost), so a request without a key never gets its body read.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import anyio
import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_json(send: Send, status: int, body: dict[str, object],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = orjson.dumps(body)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return bytes(v)
    return None


#: The dashboard's session cookie (HttpOnly, SameSite=Strict): a digest of the key.
SESSION_COOKIE = "sj_session"
#: The CSRF token's cookie (HttpOnly, SameSite=Strict); the page reads the token from
#: GET /ui/session and sends it back in CSRF_HEADER (double submit).
CSRF_COOKIE = "sj_csrf"
CSRF_HEADER = b"x-csrf-token"
#: Where the dashboard's page, assets and login live: open (no data behind them).
UI_PREFIX = "/ui"
#: Requests that change state (all others only read).
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ADMIN, READ = "admin", "read"


def session_token(key: str) -> str:
    """The session cookie's value for a key: a keyed digest, so the cookie never holds
    the key itself (a stolen cookie is a session, and logging the key out is rotating it)."""
    return hmac.new(key.encode(), b"streamjobs dashboard session", "sha256").hexdigest()


def cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        if k.lower() == b"cookie":
            for part in v.decode("latin-1").split(";"):
                name, eq, value = part.strip().partition("=")
                if eq:
                    out.setdefault(name, value)
    return out


def _same_origin(scope: Scope) -> bool:
    """False when the browser says the request comes from another site: an ``Origin``
    whose host is not this request's ``Host``, or ``Sec-Fetch-Site: cross-site``."""
    if (_header(scope, b"sec-fetch-site") or b"") == b"cross-site":
        return False
    origin = _header(scope, b"origin")
    if origin is None:
        return True  # not a browser (curl, a client library), or a same-origin GET
    host = _header(scope, b"host") or b""
    return origin.partition(b"://")[2].rstrip(b"/").lower() == host.lower()


class BearerAuth:
    """Who may call what, and cross-site request forgery.

    With keys configured, every path but ``open_paths`` and the dashboard's own
    (``/``, ``/ui...``) needs ``Authorization: Bearer <key>`` or the dashboard's session
    cookie. Keys in ``read_keys`` only read: a request that changes state answers 403.
    A token is compared with every key by :func:`hmac.compare_digest` (no early exit).

    CSRF, with or without keys: a state-changing request a browser marks as coming from
    another site (``Origin`` not this host, ``Sec-Fetch-Site: cross-site``) is refused;
    one authenticated by the session cookie must also carry the CSRF cookie's token in
    the ``X-CSRF-Token`` header (double submit). The role is left in
    ``scope["state"]["sj_role"]`` for the dashboard's session route.
    """

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], open_paths: frozenset[str],
                 read_keys: tuple[str, ...] = ()) -> None:
        self.app = app
        self.keys = [(k.encode(), ADMIN) for k in keys] + [(k.encode(), READ)
                                                            for k in read_keys]
        self.sessions = [(session_token(k).encode(), role) for k, role in
                         [(k.decode(), r) for k, r in self.keys]]
        self.open_paths = open_paths

    @staticmethod
    def _match(token: bytes, known: list[tuple[bytes, str]]) -> str | None:
        role = None
        for key, r in known:
            if hmac.compare_digest(token, key):
                role = r
        return role

    def _role(self, scope: Scope) -> tuple[str | None, bool]:
        """(role, by cookie): the bearer key's role, else the session cookie's."""
        raw = _header(scope, b"authorization")
        if raw is not None:
            scheme, _, token = raw.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                return None, False
            return self._match(token.strip(), self.keys), False
        session = cookies(scope).get(SESSION_COOKIE)
        if session:
            return self._match(session.encode(), self.sessions), True
        return None, False

    def _open(self, path: str) -> bool:
        return (path in self.open_paths or path == "/" or path == UI_PREFIX
                or path.startswith(UI_PREFIX + "/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        role, by_cookie = self._role(scope) if self.keys else (ADMIN, False)
        scope.setdefault("state", {})["sj_role"] = role
        refusal = self._refusal(scope, role, by_cookie)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "this API needs a key: Authorization: Bearer <key>"})
            return
        if scope["type"] != "http":
            return
        status, message = refusal
        headers = []
        if status == 401:
            given = _header(scope, b"authorization") is not None
            headers = [(b"www-authenticate", b'Bearer error="invalid_token"' if given
                        else b"Bearer")]
        await send_json(send, status, {"error": message}, headers)

    def _refusal(self, scope: Scope, role: str | None, by_cookie: bool
                 ) -> tuple[int, str] | None:
        path = str(scope["path"])
        unsafe = scope["type"] == "http" and scope["method"] in UNSAFE
        if unsafe and not _same_origin(scope):
            return 403, ("cross-site request refused: a state-changing request must come "
                         "from this server's own pages (Origin does not match Host)")
        if self._open(path):
            return None
        if role is None:
            if not by_cookie and _header(scope, b"authorization") is not None:
                return 401, "the API key is not valid"
            if by_cookie:
                return 401, "the session is not valid (the key was changed): log in again"
            return 401, ("this API needs a key: send the header 'Authorization: Bearer "
                         "<key>' with one of the keys in STREAMJOBS_API_KEYS")
        if unsafe and role == READ:
            return 403, ("this key may only read (STREAMJOBS_API_READ_KEYS): use a key of "
                         "STREAMJOBS_API_KEYS to change state")
        if unsafe and by_cookie and not _csrf_ok(scope):
            return 403, ("missing or wrong CSRF token: send the X-CSRF-Token header with "
                         "the token of GET /ui/session")
        return None


def _csrf_ok(scope: Scope) -> bool:
    expected = cookies(scope).get(CSRF_COOKIE, "").encode()
    given = _header(scope, CSRF_HEADER) or b""
    return bool(expected) and hmac.compare_digest(expected, given)


class BodyLimit:
    """Refuse bodies over the route's limit with 413, before anything parses them.

    A declared ``Content-Length`` over the limit is refused without reading; otherwise
    the body is read up to the limit and handed on in one piece. Bodies are JSON: a
    request without a JSON ``Content-Type`` (``curl -d`` sends a form type) is read as
    JSON, since no route takes anything else. A body that has not arrived within
    ``timeout`` seconds is answered 408 and its connection closed (a slow client does
    not hold a connection open).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int],
                 timeout: float) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"error": "Content-Length is not a number"})
                return
            if int(declared) > limit:
                await self._too_large(send, int(declared), limit)
                return
        body = bytearray()
        outcome = "timed out"
        with anyio.move_on_after(self.timeout):
            outcome = await self._read(receive, send, body, limit)
        if outcome == "read":
            await self.app(_as_json(scope), _replay(bytes(body), receive), send)
        elif outcome == "timed out":
            await send_json(send, 408, {
                "error": f"the request body did not arrive within {self.timeout:g} s "
                         f"({len(body)} bytes read): send it at once"},
                [(b"connection", b"close")])

    async def _read(self, receive: Receive, send: Send, body: bytearray, limit: int) -> str:
        """Read the whole body into ``body``: "read", or "answered" (too large, or the
        client left)."""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "answered"
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._too_large(send, len(body), limit, at_least=more)
                return "answered"
        return "read"

    @staticmethod
    async def _too_large(send: Send, size: int, limit: int, at_least: bool = False) -> None:
        what = f"over {size}" if at_least else str(size)
        await send_json(send, 413, {
            "error": f"request body is {what} bytes, over the limit of {limit} bytes "
                     "(the limit follows STREAMJOBS_MAX_PAYLOAD_BYTES); send a smaller "
                     "payload, or split a bulk request",
            "limit": limit,
        })


def _as_json(scope: Scope) -> Scope:
    ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype == b"application/json" or ctype.endswith(b"+json"):
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
