"""Pure ASGI middleware: bearer-key auth, and the request body limit.

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


class BearerAuth:
    """With keys configured, every path but ``open_paths`` needs ``Authorization: Bearer``.

    The token is compared with every key by :func:`hmac.compare_digest` (no early exit).
    """

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], open_paths: frozenset[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = open_paths

    def _authorised(self, scope: Scope) -> bool:
        raw = _header(scope, b"authorization") or b""
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return False
        token = token.strip()
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(token, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every scope but lifespan is a request: a websocket needs a key as much as HTTP.
        if (scope["type"] == "lifespan" or not self.keys or scope["path"] in self.open_paths
                or self._authorised(scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "this API needs a key: Authorization: Bearer <key>"})
            return
        if scope["type"] != "http":
            return
        given = _header(scope, b"authorization") is not None
        message = ("the API key is not valid" if given else
                   "this API needs a key: send the header 'Authorization: Bearer <key>' "
                   "with one of the keys in STREAMJOBS_API_KEYS")
        challenge = b'Bearer error="invalid_token"' if given else b"Bearer"
        await send_json(send, 401, {"error": message}, [(b"www-authenticate", challenge)])


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
