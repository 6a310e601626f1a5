"""The worker's hand-off of fetched deliveries to its runners: a FIFO on the event loop.

Unbounded on purpose: the fetch is bounded by the worker's capacity (``fetch.Capacity``),
so at most ``concurrency`` deliveries are ever here. It replaces an anyio
memory object stream, whose blocking receive cost ~15 µs a job (a generic waiter object,
a task lookup and an event per wait) on the hot path of every job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class HandoffClosed(Exception):
    """The hand-off is closed (and, for ``get``, empty)."""


class Handoff(Generic[T]):
    """``put`` from the fetchers (never waits), ``get`` from the runners (waits for an
    item). A runner cancelled after its item was handed to it puts the item back."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if self._closed:
            raise HandoffClosed("the hand-off is closed")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # else its runner was cancelled while waiting
                waiter.set_result(item)
                return
        self._items.append(item)

    def get_nowait(self) -> T:
        if self._items:
            return self._items.popleft()
        raise HandoffClosed("closed") if self._closed else LookupError("empty")

    async def get(self) -> T:
        if self._items:  # no suspension when work is queued
            return self._items.popleft()
        if self._closed:
            raise HandoffClosed("the hand-off is closed")
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over, then cancelled
                self._items.appendleft(waiter.result())
            raise

    def close(self) -> None:
        """No more puts; waiting runners end (HandoffClosed), queued items still go out."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HandoffClosed("the hand-off is closed"))
