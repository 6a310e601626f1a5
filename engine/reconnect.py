"""The worker's reconnect policy: which errors mean "the server is away for now", which
mean "the server lost our consumer group", and how long to wait before trying again.
Every loop of the worker goes through here, and survives any server reply:

* network errors and transient server states (a full server under ``noeviction``,
  loading, read-only, busy, a failover: MOVED/ASK, CLUSTERDOWN, TRYAGAIN, READONLY, and
  the AttributeError or RuntimeError redis-py raises from its own code while it rebuilds
  its node map, ``streamjobs.failover``) wait with backoff and try again;
* ``NOGROUP`` (the stream or group is gone: FLUSHALL, a restart without persistence, a
  failover to a node without it) recreates the group, loudly, then tries again;
* any other error reply is logged and tried again with backoff too: a worker never dies
  because of what the server answers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

import anyio
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamjobs.failover import is_transient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("streamjobs.worker")
#: Errors after which the same call is tried again on a new connection.
NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
#: Everything a server, a network or a client mid-failover can raise: what every loop of
#: the worker catches. AttributeError and RuntimeError are redis-py's only when raised in
#: its code: :func:`ours` tells the others apart, and the loops raise those again.
SERVER_ERRORS = (*NETWORK_ERRORS, RedisError, RedisClusterException, AttributeError,
                 RuntimeError)
#: Server states that pass: the same call succeeds later.
_PASSING = (OutOfMemoryError, BusyLoadingError, ReadOnlyError, TryAgainError, ClusterDownError,
            MasterDownError)
_PASSING_PREFIXES = ("BUSY", "UNBLOCKED", "NOREPLICAS", "LOADING", "MASTERDOWN")
T = TypeVar("T")


def lost_group(exc: BaseException) -> bool:
    """The stream or its consumer group no longer exists on the server."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


def transient(exc: BaseException) -> bool:
    """Will the same call succeed once the server or the network recovers, or the
    failover ends? (As opposed to an error of the call itself, which the caller may
    narrow down.)"""
    if isinstance(exc, (*NETWORK_ERRORS, *_PASSING)) or is_transient(exc):
        return True
    return isinstance(exc, ResponseError) and (
        lost_group(exc) or str(exc).startswith(_PASSING_PREFIXES))


def ours(exc: BaseException) -> bool:
    """An error of our own code caught with the server's (an AttributeError or a
    RuntimeError raised outside redis-py): never retried, raised again."""
    return isinstance(exc, AttributeError | RuntimeError) and not is_transient(exc)


class Backoff:
    """Capped exponential backoff for reconnecting."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.delay = base, cap, base

    async def wait(self, what: str, err: BaseException) -> None:
        if ours(err):
            raise err
        level = logging.WARNING if transient(err) else logging.ERROR
        if isinstance(err, OutOfMemoryError):
            what += " (the server is full: nothing is lost, the entry stays pending)"
        log.log(level, "%s: %s: %s; retrying in %.2fs", what, type(err).__name__, err,
                self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.base


async def retrying(what: str, call: Callable[[], Awaitable[T]],
                   regroup: Callable[[], Awaitable[None]] | None = None) -> T:
    """Run one script call, retrying through lost connections and passing server states,
    and through a lost group (``regroup`` recreates it): an outcome is never dropped.
    Any other error reply is the caller's: raised at once."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except SERVER_ERRORS as e:
            if not transient(e):
                raise
            if lost_group(e) and regroup is not None:
                await regroup()
            await backoff.wait(what, e)
