"""Rate limits on the server across workers: ``rate_limit`` per type, ``rate_limit_per_key``
per job key; a sliding window (no window of the period holds more starts than the limit)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from streamjobs import Job, JobState, Producer, RateLimited, Registry, Worker
from streamjobs.errors import ConfigError
from streamjobs.keys import TypeKeys
from streamjobs.retry import Policy, parse_rate
from tests.helpers import running, stat, wait_for, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio

#: Start times are taken in the handler (client clock, after the server's check): a few ms
#: of jitter, so a window slightly under the period is checked.
WINDOW = 0.98


def most_in_a_window(starts: list[float]) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts if s <= t < s + WINDOW) for s in starts)


async def test_a_type_rate_holds_across_three_workers(redis_url: str, r: Redis,
                                                      type_name: str) -> None:
    starts: list[float] = []
    reg = Registry()

    @reg.handler(type_name, rate_limit="5/s")
    async def work(job: Job) -> None:
        starts.append(time.monotonic())

    async with Producer(redis_url) as p:
        await p.enqueue_many(type_name, list(range(20)))
    t0 = time.monotonic()
    async with running(Worker(redis_url, reg, concurrency=10, block_ms=100)), \
            running(Worker(redis_url, reg, concurrency=10, block_ms=100)), \
            running(Worker(redis_url, reg, concurrency=10, block_ms=100)):
        await wait_for(lambda: _at_least(starts, 20), timeout=20)
    took = time.monotonic() - t0
    print(f"\nrate 5/s: 20 jobs in {took:.2f}s, at most {most_in_a_window(starts)} "
          f"starts in a {WINDOW}s window")
    assert len(starts) == 20
    assert most_in_a_window(starts) <= 5
    assert 2.9 <= took < 8
    tk = TypeKeys("sj", type_name)
    assert await stat(r, tk, "completed") == 20
    assert await stat(r, tk, "retried") == 0  # waiting spends no attempt


async def test_two_keys_at_two_per_second_proceed_independently(
    redis_url: str, type_name: str
) -> None:
    starts: dict[str, list[float]] = {"a": [], "b": []}
    reg = Registry()

    @reg.handler(type_name, rate_limit_per_key="2/s")
    async def work(job: Job) -> None:
        starts[job.payload["k"]].append(time.monotonic())

    async with Producer(redis_url) as p:
        for n in range(6):
            for k in ("a", "b"):
                await p.enqueue(type_name, {"k": k, "n": n}, key=k)
    t0 = time.monotonic()
    async with running(Worker(redis_url, reg, concurrency=10, block_ms=100)):
        await wait_for(lambda: _at_least(starts["a"] + starts["b"], 12), timeout=20)
    took = time.monotonic() - t0
    assert most_in_a_window(starts["a"]) <= 2 and most_in_a_window(starts["b"]) <= 2
    # 6 jobs per key at 2/s: ~2 s each, side by side (one after the other would be ~5 s).
    assert 1.9 <= took < 4.5


async def _at_least(xs: list[float], n: int) -> bool:
    await anyio.lowlevel.checkpoint()
    return len(xs) >= n


def test_rates_are_parsed_and_bad_ones_refused() -> None:
    assert parse_rate("10/s") == (10, 1000)
    assert parse_rate("100/m") == (100, 60_000)
    assert parse_rate("3/h") == (3, 3_600_000)
    for bad in ("10", "0/s", "-1/s", "5/x", "a/s", "1.5/s"):
        with pytest.raises(ConfigError):
            Policy(rate_limit=bad)


async def test_rate_limited_holds_the_type_back_without_spending_an_attempt(
    redis_url: str, type_name: str
) -> None:
    starts: list[tuple[float, str]] = []
    reg = Registry()

    @reg.handler(type_name, rate_limit="100/s")
    async def work(job: Job) -> None:
        starts.append((time.monotonic(), job.id))
        if len(starts) == 1:
            raise RateLimited(1.0, "the API said 429")

    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, list(range(4)))
        async with running(Worker(redis_url, reg, concurrency=1, block_ms=100)):
            await wait_for(lambda: _at_least([t for t, _ in starts], 5), timeout=15)
            first_t, first_id = starts[0]
            assert all(t - first_t >= 0.95 for t, _ in starts[1:])  # all held back
            for job_id in ids:
                await wait_state(p, type_name, job_id, JobState.COMPLETED)
            st = await p.status(type_name, first_id)
            assert st is not None and st.attempts == 1  # the held-back try spent none


async def test_rate_limited_without_a_rate_limit_is_a_retry_after(
    redis_url: str, type_name: str
) -> None:
    calls: list[float] = []
    reg = Registry()

    @reg.handler(type_name, max_attempts=3)
    async def work(job: Job) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RateLimited(0.3)

    async with Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {})
        async with running(Worker(redis_url, reg, concurrency=1, block_ms=100)):
            await wait_state(p, type_name, job_id, JobState.COMPLETED, timeout=10)
        st = await p.status(type_name, job_id)
        assert st is not None and st.attempts == 2  # like RetryAfter: an attempt spent
    assert calls[1] - calls[0] >= 0.28
