"""Building the app: middleware, error handlers, the OpenAPI document, serving."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi_offline import FastAPIOffline

from streamjobs.about import version
from streamjobs.api import errors, ui
from streamjobs.api.fast import PlainEnqueue
from streamjobs.api.middleware import BearerAuth, BodyLimit
from streamjobs.api.routes import router
from streamjobs.api.state import make_state
from streamjobs.config import ENV_PREFIX, Settings
from streamjobs.connection import resolve_url
from streamjobs.streams import keep_types_indexed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from redis.asyncio import Redis
    from starlette.types import Scope


#: Room for the JSON around a payload of max_payload_bytes in a single enqueue.
ENVELOPE_BYTES = 16 * 1024
#: A bulk request may carry this many maximal payloads' worth of bytes.
BULK_FACTOR = 16
#: Where /docs and /redoc find their scripts and styles.
DOCS_ASSETS = "/docs-assets"
#: Seconds a client may take to send a request body (a slow one answers 408).
BODY_TIMEOUT = 30.0

DESCRIPTION = """\
Enqueue jobs, read their state, list them by state, and repair dead letters. The
dashboard at `/ui` is built on these routes.

Every body is JSON; every error is `{"error": "..."}` with a message saying what to do.
With API keys configured (`STREAMJOBS_API_KEYS`), send `Authorization: Bearer <key>`
on every route but `/health` and `/ready`. Times are milliseconds since the epoch on
the server clock unless a field says seconds.
"""


def create_app(url_or_client: str | Redis, settings: Settings | None = None, *,
               body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The API for a server URL (the app owns its client) or an asyncio client."""
    settings = settings if settings is not None else Settings.from_env()
    state = make_state(url_or_client, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(keep_types_indexed, state.redis, settings.prefix,
                               settings.types_rescan_s)
                tg.start_soon(ui.sampler, state)
                yield
                tg.cancel_scope.cancel()
        finally:
            await state.aclose()

    # /docs and /redoc with their assets served from this process (works offline).
    app = FastAPIOffline(title="streamjobs", version=version(), description=DESCRIPTION,
                         lifespan=lifespan, static_url=DOCS_ASSETS)
    app.state.sj = state
    app.include_router(router)
    app.include_router(ui.router)
    errors.install(app)
    # Added last = outermost: auth first, then the body limit, then the hot route.
    app.add_middleware(PlainEnqueue, state=state)
    app.add_middleware(BodyLimit, limit_for=_limits(settings), timeout=body_timeout)
    open_paths = {"/health", "/ready"} | ({"/metrics"} if settings.metrics_public else set())
    app.add_middleware(BearerAuth, keys=settings.api_keys, open_paths=frozenset(open_paths),
                       read_keys=settings.api_read_keys)
    if settings.api_keys or settings.api_read_keys:
        _document_auth(app, open_paths)
    return app


def _limits(settings: Settings) -> Any:
    single = settings.max_payload_bytes + ENVELOPE_BYTES
    bulk = settings.max_payload_bytes * BULK_FACTOR + ENVELOPE_BYTES

    def limit_for(scope: Scope) -> int:
        return bulk if str(scope["path"]).endswith("/bulk") else single

    return limit_for


def _document_auth(app: FastAPI, open_paths: set[str]) -> None:
    """Declare the bearer scheme in the OpenAPI document (the /docs Authorize button)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "one of the keys in STREAMJOBS_API_KEYS"},
            }
            for path, ops in schema.get("paths", {}).items():
                for op in ops.values():
                    if path not in open_paths:
                        op["security"] = [{"bearer": []}]
                        op.setdefault("responses", {})["401"] = {
                            "description": "no API key, or not a valid one",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/ErrorBody"}}},
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The app of one ``streamjobs api --workers N`` process: settings and server URL from
    the ``STREAMJOBS_*`` environment, which ``serve`` sets for its workers."""
    settings = Settings.from_env()
    return create_app(resolve_url(settings), settings)


def serve(url: str, settings: Settings, host: str | None = None,
          port: int | None = None, *, workers: int = 1, access_log: bool = False) -> None:
    """Serve the API with uvicorn until SIGINT/SIGTERM (``streamjobs api``). ``workers``
    > 1 runs that many processes on one listening socket (uvicorn's supervisor; each
    process has its own client and producer), for more than one core."""
    # Only the API process loads the server.
    from uvicorn import Server

    from streamjobs.api.server import server_config

    if workers <= 1:
        Server(server_config(create_app(url, settings), settings, host, port,
                             access_log=access_log)).run()
        return
    from uvicorn.supervisors import Multiprocess

    os.environ[f"{ENV_PREFIX}REDIS_URL"] = url  # read by app_from_env in each worker
    config = server_config(f"{__name__}:app_from_env", settings, host, port,
                           workers=workers, access_log=access_log)
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()
