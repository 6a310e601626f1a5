"""How uvicorn serves the API: bounded connections, headers, bodies and keep-alive.

Imported by the API process only (``serve``), so other processes never load uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

    from fastapi import FastAPI

    from streamjobs.config import Settings

#: Connections and requests uvicorn serves at once; over it, new ones get a 503.
API_LIMIT_CONCURRENCY = 1000
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 5
#: Seconds a client may take to send a request line and headers.
HEADER_TIMEOUT = 10.0


class HeaderDeadline:
    """A deadline for the request line and headers, which uvicorn has not: a connection
    that never completes its headers is closed. Mixed into uvicorn's h11 and httptools
    protocols (both keep the request in flight as ``cycle``)."""

    header_timeout = HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._between_requests() and self._header_timer is None:
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        if not self._between_requests():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


class BoundedH11(HeaderDeadline, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol with the header deadline."""


class BoundedHttpTools(HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol with the header deadline: the one the API serves
    with (httptools, in C, parses a request in a fraction of h11's time; h11 is pure
    Python)."""


BOUNDED_HTTP: type[Any] = BoundedHttpTools


def server_config(app: FastAPI | str, settings: Settings, host: str | None = None,
                  port: int | None = None, log_level: str = "info", *,
                  header_timeout: float = HEADER_TIMEOUT, workers: int = 1,
                  access_log: bool = False) -> Config:
    """How uvicorn serves the API: bounded connections, headers and keep-alive. With
    ``workers`` > 1, ``app`` is the import string of an app factory (each worker process
    builds its own app) and the limits hold per process. No line per request unless
    ``access_log``: formatting and writing it was 9 % of an enqueue request (py-spy)."""
    http = BOUNDED_HTTP if header_timeout == HEADER_TIMEOUT else type(
        BOUNDED_HTTP.__name__, (BOUNDED_HTTP,), {"header_timeout": header_timeout})
    return Config(
        app, host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level=log_level, server_header=False, proxy_headers=False,
        limit_concurrency=API_LIMIT_CONCURRENCY, timeout_keep_alive=KEEP_ALIVE_S, http=http,
        factory=isinstance(app, str), workers=workers, access_log=access_log,
    )
