"""Unique jobs, expiry before start and cancel of a running job, end to end: producer,
worker and server (the scripts alone: tests/test_flow_scripts.py)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import anyio
import pytest

from streamjobs import CancelOutcome, Job, JobState, Producer, Registry, Worker
from streamjobs.errors import InvalidArgument
from streamjobs.keys import TypeKeys
from streamjobs.listing import list_jobs
from tests import isolated
from tests.helpers import FAST, running, stat, wait_for, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


# ---- dedup ----------------------------------------------------------------------------

async def test_enqueue_says_when_an_existing_job_answers_for_its_dedup_key(
    redis_url: str, type_name: str,
) -> None:
    async with Producer(redis_url) as p:
        first = await p.enqueue(type_name, {"n": 1}, dedup_key="order-1")
        again = await p.enqueue(type_name, {"n": 2}, dedup_key="order-1")
        assert not first.deduplicated and again.deduplicated
        assert again == first and again.state == JobState.WAITING
        later = await p.enqueue(type_name, 3, dedup_key="d", dedup_mode="debounce", delay=30)
        moved = await p.enqueue(type_name, 4, dedup_key="d", dedup_mode="debounce", delay=60)
        assert moved == later and moved.deduplicated and moved.state == JobState.DELAYED
        st = await p.status(type_name, later)
        assert st is not None and st.payload == 4
        with pytest.raises(InvalidArgument):
            await p.enqueue(type_name, 1, dedup_key="k", dedup_mode="sometimes")
        with pytest.raises(InvalidArgument):
            await p.enqueue(type_name, 1, dedup_mode="unique")


async def test_a_plain_xadd_duplicate_of_an_active_dedup_key_never_runs(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    ran: list[str] = []
    reg = Registry()

    @reg.handler(type_name)
    async def work(job: Job) -> None:
        ran.append(job.payload)
        await anyio.sleep(0.3)

    tk = TypeKeys("sj", type_name)
    async with running(Worker(redis_url, reg, concurrency=4)):
        for n in ("a", "b"):
            await r.xadd(tk.stream, {"payload": f'"{n}"', "dedup_key": "acct-9"})
        await wait_for(lambda: _done(r, tk, completed=1, deduplicated=1))
        await anyio.sleep(0.1)
        assert len(ran) == 1  # the first to start holds the key (either, at concurrency 4)
        assert await r.exists(tk.dedup("acct-9")) == 0  # freed at its ack
        await r.xadd(tk.stream, {"payload": '"c"', "dedup_key": "acct-9"})
        await wait_for(lambda: _done(r, tk, completed=2, deduplicated=1))
        assert ran[1:] == ["c"]


async def _done(r: Redis, tk: TypeKeys, **want: int) -> bool:
    return all([await stat(r, tk, k) == v for k, v in want.items()])


# ---- expiry ---------------------------------------------------------------------------

async def test_a_job_expiring_while_waiting_never_runs_and_is_listed_expired(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    ran: list[int] = []
    reg = Registry()

    @reg.handler(type_name)
    async def work(job: Job) -> None:
        ran.append(job.payload)

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        stale = await p.enqueue(type_name, 1, expires_in=0.1)
        fresh = await p.enqueue(type_name, 2, expires_in=60)
        # A plain XADD gives expires_at (ms since the epoch) itself.
        plain = (await r.xadd(tk.stream, {"payload": "3", "expires_at": "1000"})).decode()
        await anyio.sleep(0.2)  # no worker yet: the first expires while it waits
        async with running(Worker(redis_url, reg)):
            await wait_state(p, type_name, fresh, JobState.COMPLETED)
            await wait_state(p, type_name, stale, JobState.EXPIRED)
            await wait_state(p, type_name, plain, JobState.EXPIRED)
        assert ran == [2]
        page = await list_jobs(r, tk, JobState.EXPIRED)
        assert sorted(j.id for j in page.jobs) == sorted([stale, plain])
        assert await stat(r, tk, "expired") == 2


async def test_a_delayed_job_expiring_before_its_start_never_runs(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    ran: list[int] = []
    reg = Registry()

    @reg.handler(type_name)
    async def work(job: Job) -> None:
        ran.append(job.payload)

    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        job_id = await p.enqueue(type_name, 1, delay=0.3, expires_in=0.1)
        assert job_id.state == JobState.DELAYED
        await wait_state(p, type_name, job_id, JobState.EXPIRED)
        assert ran == [] and await stat(r, TypeKeys("sj", type_name), "expired") == 1


# ---- cancel of a running job ----------------------------------------------------------

async def test_cancel_stops_a_running_async_job_within_a_second_and_never_retries(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    started, stopped = anyio.Event(), anyio.Event()
    attempts: list[int] = []
    reg = Registry()

    @reg.handler(type_name, max_attempts=5, **FAST)
    async def work(job: Job) -> None:
        attempts.append(job.attempt)
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            stopped.set()

    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        job_id = await p.enqueue(type_name, {})
        await started.wait()
        t0 = time.monotonic()
        answer = await p.cancel(type_name, job_id)
        took = time.monotonic() - t0
        assert answer == JobState.RUNNING and answer.outcome is CancelOutcome.CANCELLED
        assert stopped.is_set() and took < 1.0, f"cancel took {took:.2f}s"
        await anyio.sleep(0.3)
        st = await p.status(type_name, job_id)
        assert st is not None and st.state is JobState.CANCELLED
    tk = TypeKeys("sj", type_name)
    assert attempts == [1] and await stat(r, tk, "retried") == 0
    assert await stat(r, tk, "cancelled") == 1 and await r.xlen(tk.stream) == 0


@pytest.mark.slow
async def test_cancel_kills_a_sync_handler_in_a_process(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", **FAST)(isolated.sleep_then_mark)
    keys = {"pid_key": f"test:{{{type_name}}}:pid", "done_key": f"test:{{{type_name}}}:done"}
    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        job_id = await p.enqueue(type_name, {"url": redis_url, "sleep": 3, **keys})
        await wait_for(lambda: r.exists(keys["pid_key"]))
        child = int(await r.get(keys["pid_key"]))
        answer = await p.cancel(type_name, job_id)
        assert answer.outcome is CancelOutcome.CANCELLED
        await wait_state(p, type_name, job_id, JobState.CANCELLED)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert await r.exists(keys["done_key"]) == 0


async def test_cancel_of_a_sync_handler_in_a_thread_says_it_cannot_be_interrupted(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg = Registry()
    started: list[int] = []

    @reg.handler(type_name, max_attempts=5, **FAST)
    def work(job: Job) -> None:
        started.append(job.attempt)
        time.sleep(0.8)
        raise RuntimeError("failed after the cancel")

    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        job_id = await p.enqueue(type_name, {})
        await wait_for(lambda: bool(started))
        answer = await p.cancel(type_name, job_id)
        assert answer == JobState.RUNNING
        assert answer.outcome is CancelOutcome.UNINTERRUPTIBLE
        # The attempt ran on; its failure is not retried: the job ends cancelled.
        await wait_state(p, type_name, job_id, JobState.CANCELLED)
    assert started == [1]
    assert await stat(r, TypeKeys("sj", type_name), "retried") == 0


async def test_a_stale_cancel_request_does_not_cancel_a_job_reusing_the_id(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    started, release = anyio.Event(), anyio.Event()
    reg = Registry()

    @reg.handler(type_name)
    async def work(job: Job) -> str:
        started.set()
        await release.wait()
        return "done"

    tk = TypeKeys("sj", type_name)
    await r.zadd(tk.cancels, {"reused": 1})  # left by an earlier job of that id
    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        await p.enqueue(type_name, {}, job_id="reused")
        await started.wait()
        await wait_for(lambda: _zcard_is(r, tk.cancels, 0))
        release.set()
        await wait_state(p, type_name, "reused", JobState.COMPLETED)


async def _zcard_is(r: Redis, key: str, n: int) -> bool:
    return int(await r.zcard(key)) == n
