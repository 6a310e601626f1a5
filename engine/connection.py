"""Clients: from an explicit URL, from settings, or the embedded server.

Every client fails fast on a connection that stopped answering (a half-open TCP
connection left by a NAT, a failover or a black-holed route) instead of waiting forever:

- ``socket_timeout`` bounds every read. Blocking reads (``XREADGROUP BLOCK``) must stay
  below it: the worker raises its own client's timeout to ``block + BLOCK_MARGIN_S``.
- TCP keepalive probes idle connections, so a dead peer is noticed within
  ``KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_PROBES`` even with no traffic.
- ``health_check_interval``: a pooled connection idle that long is PINGed before use, so
  a silently dropped one fails (and is replaced) on a harmless PING rather than on a
  script call that would then be retried.
"""

from __future__ import annotations

import socket
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamjobs.config import Settings

#: Seconds any one read may wait for the server.
SOCKET_TIMEOUT = 5.0
#: A blocking read's BLOCK time plus this must not exceed the socket timeout.
BLOCK_MARGIN_S = 2.0
CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_S = 15.0
KEEPALIVE_IDLE_S = 15
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3


def keepalive_options() -> dict[int, int]:
    """TCP keepalive tuning, for the options this platform has (macOS: TCP_KEEPALIVE)."""
    wanted = [
        (getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)),
         KEEPALIVE_IDLE_S),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
    ]
    return {opt: value for opt, value in wanted if opt is not None}


def client_from_url(url: str, **kwargs: Any) -> Redis:
    """An asyncio client returning bytes (payloads stay exact; orjson reads bytes)."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_S,
        # A pooled connection left dead by a server restart fails once; retry on a fresh
        # one. (Enqueue without a job id is then at least once: pass an id for dedup.)
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if not url.startswith("unix:"):  # unix sockets take no TCP options
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = keepalive_options()
    options.update(kwargs)
    return Redis.from_url(url, **options)


def socket_timeout_of(redis: Redis) -> float | None:
    """The read timeout a client's connections use (None: no timeout)."""
    value = redis.connection_pool.connection_kwargs.get("socket_timeout")
    return None if value is None else float(value)


def resolve_url(target: str | Settings | None) -> str:
    """The server URL for a URL, settings or the environment; None means not configured."""
    if isinstance(target, str):
        return target
    settings = target if target is not None else Settings.from_env()
    if settings.redis_url:
        return settings.redis_url
    raise LookupError("no STREAMJOBS_REDIS_URL configured")
