"""The worker's reconnect policy: which errors mean "the server is away for now", and how
long to wait before trying again. Every loop of the worker goes through here."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("streamjobs.worker")
#: Errors after which the same call is tried again on a new connection.
NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
T = TypeVar("T")


class Backoff:
    """Capped exponential backoff for reconnecting."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.delay = base, cap, base

    async def wait(self, what: str, err: BaseException) -> None:
        log.warning("%s: %s; retrying in %.2fs", what, err, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.base


async def retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run one script call, retrying through lost connections: an outcome is never dropped."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except NETWORK_ERRORS as e:
            await backoff.wait(what, e)
