"""The worker's hand-off of fetched deliveries to its runners (engine/handoff.py)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from streamjobs.handoff import Handoff, HandoffClosed

T = TypeVar("T")


async def _waiting(h: Handoff[T]) -> asyncio.Task[T]:
    """A runner waiting in ``get`` (its task has run up to the wait)."""
    task = asyncio.create_task(h.get())
    await asyncio.sleep(0)
    return task


@pytest.mark.anyio
async def test_items_go_in_order_to_waiting_runners_first() -> None:
    h: Handoff[int] = Handoff()
    waiting = [await _waiting(h) for _ in range(2)]
    for i in range(4):
        h.put(i)
    assert [await w for w in waiting] == [0, 1]  # the runners that waited, in their order
    assert [await h.get(), await h.get()] == [2, 3]
    assert len(h) == 0


@pytest.mark.anyio
async def test_a_runner_cancelled_after_its_item_was_handed_over_puts_it_back() -> None:
    """An item is never lost: the race where put() resolves a waiter and the waiter's
    task is cancelled before it runs leaves the item for the next runner."""
    h: Handoff[str] = Handoff()
    first = await _waiting(h)
    h.put("job")
    first.cancel()  # before the task resumed with its item
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(h.get(), 1) == "job"


@pytest.mark.anyio
async def test_a_cancelled_waiter_is_skipped() -> None:
    h: Handoff[str] = Handoff()
    gone = await _waiting(h)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    h.put("job")
    assert h.get_nowait() == "job"


@pytest.mark.anyio
async def test_close_ends_waiting_runners_after_what_is_left() -> None:
    h: Handoff[int] = Handoff()
    waiting = await _waiting(h)
    h.close()
    with pytest.raises(HandoffClosed):
        await waiting
    h2: Handoff[int] = Handoff()
    h2.put(1)
    h2.close()
    assert await h2.get() == 1  # what was handed in before the close still goes out
    with pytest.raises(HandoffClosed):
        await h2.get()
    with pytest.raises(HandoffClosed):
        h2.put(2)
