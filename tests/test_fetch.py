"""The fetcher (engine/fetch.py): a worker on many types picks a job up at once whatever
its concurrency, and fetched plus reclaimed entries never outnumber its slots."""

from __future__ import annotations

import random
import time
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from streamjobs import Producer, Worker
from streamjobs.contract import Stat
from streamjobs.fetch import Capacity, ReadState
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.registry import Registry
from tests.helpers import running, stat, wait_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.job import Job

pytestmark = pytest.mark.anyio


def _types(n: int) -> list[str]:
    base = uuid.uuid4().hex[:8]
    return [f"f{base}{k:02d}" for k in range(n)]


async def _pickups(redis_url: str, types: list[str], jobs: int, gap: float) -> list[float]:
    """Send ``jobs`` jobs into random types of an idle worker (concurrency 4), ``gap``
    apart; each one's send .. handler start, in ms."""
    started: dict[int, float] = {}
    warm: list[int] = []
    reg = Registry()

    async def job(j: Job) -> None:
        if j.payload["i"] < 0:
            warm.append(1)
        started[j.payload["i"]] = time.perf_counter()

    for t in types:
        reg.handler(t)(job)
    sent: dict[int, float] = {}
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=4)):
        for t in types:  # the producer's first enqueue of a type reads its partitions
            await p.enqueue(t, {"i": -1})
        await wait_for(lambda: len(warm) == len(types))
        await anyio.sleep(0.3)  # settled into its blocking read
        for i in range(jobs):
            sent[i] = time.perf_counter()
            await p.enqueue(random.choice(types), {"i": i})
            await anyio.sleep(gap)
        await wait_for(lambda: len(started) == jobs + 1, timeout=10)
    return sorted((started[i] - sent[i]) * 1000 for i in range(jobs))


async def test_fifty_types_pick_up_as_fast_as_one(redis_url: str) -> None:
    one = await _pickups(redis_url, _types(1), 6, 0.2)
    many = await _pickups(redis_url, _types(50), 10, 0.5)  # 2 jobs/s over 50 types
    print(f"pickup ms: one type p50 {one[len(one) // 2]:.2f} max {one[-1]:.2f}; "
          f"50 types p50 {many[len(many) // 2]:.2f} max {many[-1]:.2f}")
    # Generous for a shared 2-core machine: the old fetcher took seconds here.
    assert many[-1] <= one[-1] + 150


@pytest.mark.parametrize("n_types", [1, 6])
async def test_fetch_and_reclaim_together_never_hold_more_than_concurrency(
        r: Redis, redis_url: str, n_types: int) -> None:
    types = _types(n_types)
    tks = [TypeKeys("sj", t) for t in types]
    done: list[str] = []
    reg = Registry()

    async def slow(j: Job) -> None:
        await anyio.sleep(0.05)
        done.append(j.id)

    for t in types:
        reg.handler(t, visibility_timeout=0.3)(slow)
    async with Producer(redis_url) as p:
        for t in types:
            await p.enqueue_many(t, [{"n": i} for i in range(60 // n_types)])
        # A dead worker's entries: fetched, never settled, reclaimable once idle 0.3 s.
        for tk in tks:
            await r.xreadgroup(GROUP, "dead", {tk.stream: ">"}, count=20 // n_types)
        await anyio.sleep(0.35)
        for t in types:
            await p.enqueue_many(t, [{"n": i} for i in range(40 // n_types)])
    total = sum([int(await r.xlen(tk.stream)) for tk in tks])
    worker = Worker(redis_url, reg, concurrency=4, block_ms=200)
    most = 0
    async with running(worker):
        deadline = time.monotonic() + 30
        while len(done) < total and time.monotonic() < deadline:
            most = max(most, await _held(r, tks, worker.name))
            await anyio.sleep(0.003)
    assert len(done) == total
    reclaimed = sum([await stat(r, tk, Stat.RECLAIMED) for tk in tks])
    assert reclaimed == 20 // n_types * n_types  # the reclaimer was busy too
    assert 1 <= most <= 4


async def _held(r: Redis, tks: list[TypeKeys], consumer: str) -> int:
    """The consumer's pending entries over all the streams, read at one instant."""
    async with r.pipeline(transaction=True) as pipe:
        for tk in tks:
            pipe.xpending_range(tk.stream, GROUP, "-", "+", 1000, consumername=consumer)
        return sum(len(rows) for rows in await pipe.execute())


async def test_capacity_is_taken_and_given_in_turn() -> None:
    cap = Capacity(3)
    assert await cap.take(2) == 2
    assert await cap.take(5) == 1
    order: list[str] = []

    async def taker(name: str) -> None:
        order.append(name + str(await cap.take(1)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(taker, "a")
        await anyio.sleep(0.01)
        tg.start_soon(taker, "b")
        await anyio.sleep(0.01)
        assert order == [] and cap.free == 0
        cap.give(1)
        await anyio.sleep(0.01)
        cap.give(1)
    assert order == ["a1", "b1"]


def test_read_state_keeps_the_delivered_position() -> None:
    st = ReadState(["a", "b", "c"])
    assert st.ready == {"a", "b", "c"}
    st.read("a", "5-1", None, full=False)  # empty read: delivered up to the top
    st.read("b", None, None, full=False)  # empty stream
    st.read("c", "9-0", "9-0", full=True)  # full read: more may wait
    assert st.ready == {"c"} and st.after == {"a": "5-1", "b": "0-0"}
    st.read("a", "4-0", "10-2", full=False)  # never moves back, keeps the newest
    assert st.after["a"] == "10-2"
    st.rotate(1)
    assert st.tags == ["b", "c", "a"]
    st.woke(["b"])
    st.reset()
    assert st.ready == {"a", "b", "c"}
