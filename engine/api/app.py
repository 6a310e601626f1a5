"""Building the app: state, middleware, error handlers, the OpenAPI document, serving."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram

from streamjobs.api import errors
from streamjobs.api.middleware import BearerAuth, BodyLimit
from streamjobs.collector import QueueCollector, sync_client
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.dead import DeadLetters
from streamjobs.metrics import LATENCY_BUCKETS
from streamjobs.producer import Producer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from redis.asyncio import Redis
    from starlette.types import Scope

    from streamjobs.producer import JobSpec
    from streamjobs.scripts import EnqueueResult

#: Room for the JSON around a payload of max_payload_bytes in a single enqueue.
ENVELOPE_BYTES = 16 * 1024
#: A bulk request may carry this many maximal payloads' worth of bytes.
BULK_FACTOR = 16
#: Seconds one server call of the API may take before it answers 503.
SOCKET_TIMEOUT = 10.0

DESCRIPTION = """\
Enqueue jobs, read their state, list them by state, and repair dead letters.

Every body is JSON; every error is `{"error": "..."}` with a message saying what to do.
With API keys configured (`STREAMJOBS_API_KEYS`), send `Authorization: Bearer <key>`
on every route but `/health` and `/ready`. Times are milliseconds since the epoch on
the server clock unless a field says seconds.
"""


@dataclass
class ApiState:
    """What the routes share: one client, producer, dead letters and metric registry."""

    settings: Settings
    redis: Redis
    producer: Producer
    dead: DeadLetters
    registry: CollectorRegistry
    enqueue_seconds: Histogram
    collector: QueueCollector
    owns_client: bool

    async def enqueue(self, type_: str, specs: Sequence[JobSpec]) -> list[EnqueueResult]:
        """Enqueue (pipelined), timing the call in ``streamjobs_enqueue_duration_seconds``."""
        t0 = time.perf_counter()
        try:
            return await self.producer.enqueue_batch(type_, specs)
        finally:
            self.enqueue_seconds.labels(type_).observe(time.perf_counter() - t0)

    async def aclose(self) -> None:
        self.collector.close()
        if self.owns_client:
            await self.redis.aclose()


def _state(url_or_client: str | Redis, settings: Settings) -> ApiState:
    owns = isinstance(url_or_client, str)
    redis = (client_from_url(url_or_client, socket_timeout=SOCKET_TIMEOUT)
             if isinstance(url_or_client, str) else url_or_client)
    registry = CollectorRegistry()
    collector = QueueCollector(sync_client(url_or_client), settings.prefix)
    registry.register(collector)
    enqueue_seconds = Histogram(
        "streamjobs_enqueue_duration_seconds", "Time to enqueue one request's jobs (API)",
        ["type"], buckets=LATENCY_BUCKETS, registry=registry,
    )
    return ApiState(settings, redis, Producer(redis, settings=settings),
                    DeadLetters(redis, settings=settings), registry, enqueue_seconds,
                    collector, owns)


def create_app(url_or_client: str | Redis, settings: Settings | None = None) -> FastAPI:
    """The API for a server URL (the app owns its client) or an asyncio client."""
    from streamjobs.api.routes import router

    settings = settings if settings is not None else Settings.from_env()
    state = _state(url_or_client, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(title="streamjobs", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.sj = state
    app.include_router(router)
    errors.install(app)
    # Added last = outermost: auth first, then the body limit.
    app.add_middleware(BodyLimit, limit_for=_limits(settings))
    open_paths = {"/health", "/ready"} | ({"/metrics"} if settings.metrics_public else set())
    app.add_middleware(BearerAuth, keys=settings.api_keys, open_paths=frozenset(open_paths))
    if settings.api_keys:
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamjobs")
    except PackageNotFoundError:
        return "0"


def serve(url: str, settings: Settings, host: str | None = None,
          port: int | None = None) -> None:
    """Serve the API with uvicorn until SIGINT/SIGTERM (``streamjobs api``)."""
    import uvicorn

    app = create_app(url, settings)
    uvicorn.run(app, host=host or settings.api_host,
                port=port if port is not None else settings.api_port,
                log_level="info", server_header=False, proxy_headers=False)
