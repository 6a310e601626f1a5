"""Which errors mean "the server is failing over or away for now", and a retry until a
deadline for producers. A failover looks like this from a client: connection refused or
reset, then MOVED/ASK, CLUSTERDOWN, TRYAGAIN or READONLY replies while the cluster
promotes a replica, and, inside redis-py while it rebuilds its node map, an
AttributeError or RuntimeError raised from its own code.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, TypeVar

import anyio
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamjobs.errors import ServerUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("streamjobs")
T = TypeVar("T")

_ALWAYS = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError,
           ReadOnlyError, MasterDownError, BusyLoadingError, RedisClusterException)
#: Reply prefixes of a server mid-failover (some arrive as a plain ResponseError).
_REPLIES = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN",
            "NOREPLICAS")


def _raised_in_redis_py(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("redis.")


def is_transient(e: BaseException) -> bool:
    """True when the same call may succeed once the server is back or the failover ends."""
    if isinstance(e, _ALWAYS):
        return True
    if isinstance(e, ResponseError):
        return str(e).startswith(_REPLIES)
    # redis-py's own state while it rebuilds connections (never an error of our code).
    return isinstance(e, AttributeError | RuntimeError) and _raised_in_redis_py(e)


async def until_deadline(what: str, call: Callable[[], Awaitable[T]], deadline_s: float,
                         *, base: float = 0.05, cap: float = 1.0) -> T:
    """Run ``call`` again after each transient error, with capped exponential backoff,
    until ``deadline_s`` seconds have passed; then raise ServerUnavailable from the last
    error. Other errors propagate at once."""
    end = time.monotonic() + deadline_s
    delay = base
    while True:
        try:
            return await call()
        except Exception as e:
            if not is_transient(e):
                raise
            left = end - time.monotonic()
            if left <= 0:
                raise ServerUnavailable(
                    f"{what}: the server cannot be reached, or is failing over, after "
                    f"{deadline_s:g}s of retries (last error: {type(e).__name__}: {e})") from e
            log.warning("%s: %s: %s; retrying in %.2fs", what, type(e).__name__, e, delay)
            await anyio.sleep(min(delay, left))
            delay = min(cap, delay * 2)
