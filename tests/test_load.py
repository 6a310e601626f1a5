"""The issue's load criteria, bounded in time, on a real server."""

from __future__ import annotations

import random
import signal
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.keys import GROUP, TypeKeys
from tests.helpers import running, spawn_worker, stat, wait_for

if TYPE_CHECKING:

    from redis.asyncio import Redis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.timeout(180)
async def test_10k_jobs_30pct_failures_all_end_completed_or_dead(
    redis_url: str, r: Redis, type_name: str
) -> None:
    n = 10_000
    reg = Registry()
    rng = random.Random(7)
    succeeded: set[str] = set()
    attempts = 0

    @reg.handler(type_name, max_attempts=5, immediate_retries=1, backoff_base=0.005,
                 backoff_cap=0.02, jitter=0.5)
    async def h(job: Job) -> None:
        nonlocal attempts
        attempts += 1
        if rng.random() < 0.3:
            raise RuntimeError("random failure")
        succeeded.add(job.id)

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, [{"i": i} for i in range(n)])
    async with running(Worker(redis_url, reg, concurrency=64)):
        async def finished() -> bool:
            return await stat(r, tk, "completed") + await stat(r, tk, "dead") >= n
        await wait_for(finished, timeout=150, interval=0.2)
    completed, dead = await stat(r, tk, "completed"), await stat(r, tk, "dead")
    assert completed + dead == n
    assert completed == len(succeeded)
    assert await r.xlen(tk.dead) == dead
    assert await r.xlen(tk.stream) == 0
    assert (await r.xpending(tk.stream, GROUP))["pending"] == 0
    assert await r.zcard(tk.delayed) == 0
    assert await stat(r, tk, "retried") == attempts - n  # every failed attempt but the last
    # each id is in exactly one final state
    states = {}
    for i in range(0, n, 500):
        async with r.pipeline(transaction=False) as pipe:
            for job_id in ids[i:i + 500]:
                pipe.hget(tk.job(job_id), "state")
            for job_id, st in zip(ids[i:i + 500], await pipe.execute(), strict=True):
                states[job_id] = st
    assert {s for s in states.values()} <= {b"completed", b"dead"}
    assert sum(1 for s in states.values() if s == b"dead") == dead
    print(f"10k/30%: completed={completed} dead={dead} attempts={attempts}")


@pytest.mark.timeout(180)
async def test_5k_jobs_one_of_two_workers_sigkilled(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    n = 5_000
    tk = TypeKeys("sj", type_name)
    runs_key = f"test:{{{type_name}}}:runs"
    async with Producer(redis_url) as p:
        await p.enqueue_many(type_name, [{"sleep": 0.002} for _ in range(n)])
    env = {"SJ_TEST_TYPE": type_name, "SJ_VT": "2"}
    victim = spawn_worker(redis_url, "tests.workers", "--concurrency", "16", env=env)
    survivor = spawn_worker(redis_url, "tests.workers", "--concurrency", "16", env=env)
    procs += [victim, survivor]

    async def some_done() -> bool:
        return await stat(r, tk, "completed") >= n // 5
    await wait_for(some_done, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # What the dead worker held: its consumer's pending entries at death.
    infos = await r.xinfo_consumers(tk.stream, GROUP)
    held = {c["name"].decode(): int(c["pending"]) for c in infos}
    killed_in_flight = max(v for k, v in held.items() if f":{victim.pid}:" in k)

    async def all_done() -> bool:
        return await stat(r, tk, "completed") >= n
    await wait_for(all_done, timeout=120, interval=0.2)
    await anyio.sleep(0.5)
    runs = [int(v) for v in (await r.hgetall(runs_key)).values()]
    duplicates = sum(runs) - n
    assert len(runs) == n and await stat(r, tk, "completed") == n
    assert duplicates <= killed_in_flight
    assert (await r.xpending(tk.stream, GROUP))["pending"] == 0
    print(f"5k/SIGKILL: in flight at kill={killed_in_flight} duplicates={duplicates}")
