"""Timeouts and cancellation stop the attempt: never two attempts of a job at once in one
worker, nothing released at shutdown completes, a lost entry's attempt is cancelled."""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from redis import Redis as SyncRedis

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.contract import JobState
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import Scripts
from tests.helpers import FAST, running, spawn_worker, stat, wait_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


async def test_sync_timeout_holds_the_slot_until_the_thread_returns(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """timeout=1, the first attempt sleeps 3 s: its retry, and the next job, start only
    after its thread returned (concurrency 1), and the attempt still counts as a timeout."""
    reg = Registry()
    spans = f"test:{{{type_name}}}:spans"
    sync_r = SyncRedis.from_url(redis_url)

    @reg.handler(type_name, timeout=1, max_attempts=2, **FAST)
    def h(job: Job) -> None:
        start = time.time()
        if job.attempt == 1 and job.payload.get("slow"):
            time.sleep(3)
        sync_r.rpush(spans, f"{job.id}:{job.attempt}:{start}:{time.time()}")

    async with Producer(redis_url) as p:
        slow = await p.enqueue(type_name, {"slow": True})
        other = await p.enqueue(type_name, {})
        async with running(Worker(redis_url, reg, concurrency=1)):
            async def all_done() -> bool:
                st = [await p.status(type_name, j) for j in (slow, other)]
                return all(s is not None and s.state is JobState.COMPLETED for s in st)
            await wait_for(all_done, 15)
    sync_r.close()
    assert await stat(r, TypeKeys("sj", type_name), "retried") == 1  # the timed-out attempt
    rows = [row.decode().split(":") for row in await r.lrange(spans, 0, -1)]
    assert [(j, int(a)) for j, a, _, _ in rows] == [(slow, 1), (other, 1), (slow, 2)]
    intervals = [(float(s), float(e)) for _, _, s, e in rows]
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, f"attempts overlap: {intervals}"


async def test_released_sync_jobs_never_complete_and_grace_is_kept(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    """A sync attempt still running when the grace period ends is released, and its
    thread dies with the process: it does not finish later, nor hold up the exit."""
    tk = TypeKeys("sj", type_name)
    runs = f"test:{{{type_name}}}:runs"
    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, [{"sleep": 2.5} for _ in range(4)])
    proc = spawn_worker(redis_url, "tests.sync_workers", "--concurrency", "4",
                        "--grace", "0.5", env={"SJ_TEST_TYPE": type_name})
    procs.append(proc)

    async def started() -> bool:
        return int(await r.hget(runs, "started") or 0) == 4
    await wait_for(started, 15)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await anyio.to_thread.run_sync(proc.wait)
    took = time.monotonic() - t0
    await anyio.sleep(3)  # past the handlers' own end
    assert int(await r.hget(runs, "finished") or 0) == 0
    assert await stat(r, tk, "released") == 4
    async with Producer(redis_url) as p:
        for job_id in ids:
            st = await p.status(type_name, job_id)
            assert st is not None and st.state is JobState.WAITING and st.attempts == 0
    print(f"\nsync shutdown: a 0.5 s grace took {took:.2f}s")
    assert took < 1.5, f"a 0.5 s grace took {took:.2f}s"


async def test_entry_lost_to_another_consumer_cancels_the_attempt(
    redis_url: str, r: Redis, type_name: str
) -> None:
    reg = Registry()
    started, cancelled = anyio.Event(), anyio.Event()

    @reg.handler(type_name, visibility_timeout=0.6, max_deliveries=10)
    async def h(job: Job) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()

    tk = TypeKeys("sj", type_name)
    scripts = Scripts(r)
    async with Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {})
        async with running(Worker(redis_url, reg)), anyio.create_task_group() as tg:
            await started.wait()
            claimed = await scripts.reclaim(tk, GROUP, "other-worker", 0, 10, 10)
            assert len(claimed.claimed) == 1
            entry = claimed.claimed[0][0]

            async def keep_owning() -> None:  # the other consumer is alive: it touches
                while True:
                    await scripts.touch(tk, GROUP, "other-worker", [entry])
                    await anyio.sleep(0.1)
            tg.start_soon(keep_owning)
            with anyio.fail_after(3):
                await cancelled.wait()
            await anyio.sleep(0.3)  # nothing settles for the lost attempt
            tg.cancel_scope.cancel()
        st = await p.status(type_name, job_id)
    assert st is not None and st.state is JobState.RUNNING and st.attempts == 0
    stats = {k.decode(): int(v) for k, v in (await r.hgetall(tk.stats)).items()}
    assert not {"completed", "retried", "dead", "released"} & {
        k for k, v in stats.items() if v}, stats
    rows = await r.xpending_range(tk.stream, GROUP, "-", "+", 10)
    assert [row["consumer"] for row in rows] == [b"other-worker"]


async def test_in_process_shutdown_discards_an_abandoned_threads_result(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """Run in-process (no process exit to end it), the abandoned thread finishes, but its
    result is discarded: the job stays released, and the thread does not linger."""
    reg = Registry()
    finished = threading.Event()
    before = set(threading.enumerate())

    @reg.handler(type_name)
    def h(job: Job) -> str:
        time.sleep(1)
        finished.set()
        return "late"

    async with Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {})
        worker = Worker(redis_url, reg, grace_period=0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: worker.in_flight == 1)
            await anyio.sleep(0.1)
            worker.stop()
        await anyio.to_thread.run_sync(finished.wait, 5)
        await anyio.sleep(0.2)
        st = await p.status(type_name, job_id)
    assert st is not None and st.state is JobState.WAITING and st.attempts == 0
    assert [t for t in set(threading.enumerate()) - before
            if t.name == "streamjobs handler"] == []
