"""Clients: from an explicit URL, from settings, or the embedded server."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamjobs.config import Settings


def client_from_url(url: str, **kwargs: Any) -> Redis:
    """An asyncio client returning bytes (payloads stay exact; orjson reads bytes)."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": 5,
        "health_check_interval": 0,
        # A pooled connection left dead by a server restart fails once; retry on a fresh
        # one. (Enqueue without a job id is then at least once: pass an id for dedup.)
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    options.update(kwargs)
    return Redis.from_url(url, **options)


def resolve_url(target: str | Settings | None) -> str:
    """The server URL for a URL, settings or the environment; None means not configured."""
    if isinstance(target, str):
        return target
    settings = target if target is not None else Settings.from_env()
    if settings.redis_url:
        return settings.redis_url
    raise LookupError("no STREAMJOBS_REDIS_URL configured")
