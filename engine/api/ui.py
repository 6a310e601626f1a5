"""The dashboard: its page and assets (served from the package: works offline), the
login that sets the session cookie, and the background sampler of the throughput chart.

The page is one HTML shell and ES modules; everything it shows comes from the JSON API
(routes.py), which checks every request server side. None of these routes is in the
OpenAPI document.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from redis.exceptions import RedisError

from streamjobs.api.errors import error_response
from streamjobs.api.middleware import (
    ADMIN,
    CSRF_COOKIE,
    READ,
    SESSION_COOKIE,
    UI_PREFIX,
    cookies,
    session_token,
)
from streamjobs.counts import known_types, server_ms
from streamjobs.history import SAMPLE_S, sample, with_partitions

if TYPE_CHECKING:
    from streamjobs.api.state import ApiState

log = logging.getLogger("streamjobs.api")
router = APIRouter(include_in_schema=False)

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: No inline script or style, nothing from elsewhere: the page runs only its own modules.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin", "cache-control": "no-cache"}
#: Seconds a session cookie lasts (it is also void once its key leaves the settings).
SESSION_S = 7 * 86400


def _assets() -> dict[str, bytes]:
    files = resources.files("streamjobs.ui")
    return {f.name: f.read_bytes() for f in files.iterdir()
            if f.is_file() and any(f.name.endswith(ext) for ext in _TYPES)}


ASSETS = _assets()


def _asset(name: str) -> Response:
    data = ASSETS.get(name)
    if data is None:
        return error_response(404, f"no dashboard file {name!r}")
    ctype = next(t for ext, t in _TYPES.items() if name.endswith(ext))
    return Response(data, media_type=ctype, headers=_HEADERS)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(UI_PREFIX, status_code=307)


@router.get(UI_PREFIX)
async def page() -> Response:
    return _asset("index.html")


@router.get(UI_PREFIX + "/static/{name}")
async def static(name: str) -> Response:
    return _asset(name)


def _api(request: Request) -> ApiState:
    state: ApiState = request.app.state.sj
    return state


def _keys(api: ApiState) -> list[tuple[str, str]]:
    return ([(k, ADMIN) for k in api.settings.api_keys]
            + [(k, READ) for k in api.settings.api_read_keys])


def _cookie(response: Response, request: Request, name: str, value: str,
            max_age: int = SESSION_S) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


@router.get(UI_PREFIX + "/session")
async def session(request: Request) -> Response:
    """Whether a key is needed, this browser's role (null: log in), and the CSRF token to
    send in X-CSRF-Token with every state-changing request."""
    api = _api(request)
    token = cookies(request.scope).get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    role = request.scope.get("state", {}).get("sj_role")
    response = JSONResponse({"auth": bool(_keys(api)), "role": role, "csrf": token},
                            headers={"cache-control": "no-store"})
    _cookie(response, request, CSRF_COOKIE, token)
    return response


@router.post(UI_PREFIX + "/login")
async def login(request: Request) -> Response:
    """``{"key": "..."}``: a valid key sets the session cookie and a fresh CSRF token."""
    api = _api(request)
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    given = body.get("key") if isinstance(body, dict) else None
    if not isinstance(given, str) or not given:
        return error_response(422, 'send {"key": "<one of the API keys>"}')
    role = None
    for key, r in _keys(api):
        if hmac.compare_digest(given.encode(), key.encode()):
            role = r
    if role is None:
        return error_response(401, "that key is not valid: ask for one of the keys in "
                                   "STREAMJOBS_API_KEYS")
    token = secrets.token_urlsafe(32)
    response = JSONResponse({"role": role, "csrf": token})
    _cookie(response, request, SESSION_COOKIE, session_token(given))
    _cookie(response, request, CSRF_COOKIE, token)
    return response


@router.post(UI_PREFIX + "/logout")
async def logout(request: Request) -> Response:
    response = JSONResponse({"role": None})
    _cookie(response, request, SESSION_COOKIE, "", max_age=0)
    return response


async def sampler(api: ApiState) -> None:
    """Snapshot every type's counters each SAMPLE_S (the chart's minutes), for as long as
    the API runs; a server that does not answer is tried again next time."""
    while True:
        try:
            names = await known_types(api.redis, api.settings.prefix)
            now = server_ms(await api.redis.time())
            tks = await with_partitions(api.redis, [api.producer.keys(t) for t in names])
            await sample(api.redis, tks, now)
        except (RedisError, OSError) as e:
            log.debug("throughput sample skipped: %s", e)
        await anyio.sleep(SAMPLE_S)
