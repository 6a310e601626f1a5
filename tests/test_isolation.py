"""isolation="process": sync handlers in child processes, killed on timeout, recycled."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.contract import JobState
from streamjobs.errors import ConfigError
from streamjobs.keys import TypeKeys
from tests import isolated
from tests.helpers import FAST, running, stat, wait_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def finish(p: Producer, type_name: str, ids: list[str], want: JobState,
                 timeout: float = 20) -> list[Any]:
    """Wait until every job is in ``want``; their results."""
    async def done() -> bool:
        states = [await p.status(type_name, j) for j in ids]
        return all(s is not None and s.state is want for s in states)
    await wait_for(done, timeout)
    return [st.result for st in [await p.status(type_name, j) for j in ids] if st]


async def test_timeout_kills_the_child(redis_url: str, r: Redis, type_name: str) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", timeout=1, max_attempts=1,
                **FAST)(isolated.sleep_then_mark)
    keys = {"pid_key": f"test:{{{type_name}}}:pid", "done_key": f"test:{{{type_name}}}:done"}
    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        warm = {"pid_key": f"test:{{{type_name}}}:w", "done_key": f"test:{{{type_name}}}:w"}
        await finish(p, type_name, [await p.enqueue(type_name, {
            "url": redis_url, "sleep": 0, **warm})], JobState.COMPLETED)  # a child is up
        job_id = await p.enqueue(type_name, {"url": redis_url, "sleep": 2.5, **keys})
        await finish(p, type_name, [job_id], JobState.DEAD)
        st = await p.status(type_name, job_id)
        assert st is not None and st.error is not None and "ran over 1s" in st.error
        child = int(await r.get(keys["pid_key"]))
        await anyio.sleep(2.5)  # past the moment the handler would have set done_key
    assert await r.exists(keys["done_key"]) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_child_is_recycled_after_max_tasks(redis_url: str, type_name: str) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", max_tasks_per_child=2, **FAST)(isolated.pid)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=1)):
        ids = [await p.enqueue(type_name, {}) for _ in range(5)]
        pids = await finish(p, type_name, ids, JobState.COMPLETED)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert os.getpid() not in pids


async def test_child_over_its_memory_limit_is_recycled(redis_url: str, type_name: str) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", max_child_memory_mb=150, **FAST)(isolated.hog)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=1)):
        pids = []
        for mb in (0, 0, 200, 0):  # sequential: one child at a time
            job_id = await p.enqueue(type_name, {"mb": mb})
            pids += await finish(p, type_name, [job_id], JobState.COMPLETED)
    assert pids[0] == pids[1] == pids[2] != pids[3]


async def test_child_crash_fails_the_attempt_and_the_worker_runs_on(
    redis_url: str, r: Redis, type_name: str
) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", max_attempts=2, **FAST)(isolated.crash_first)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=2)):
        ids = [await p.enqueue(type_name, {}) for _ in range(3)]
        pids = await finish(p, type_name, ids, JobState.COMPLETED)
    assert len(set(pids)) >= 1 and os.getpid() not in pids
    assert await stat(r, TypeKeys("sj", type_name), "retried") == 3


async def test_handler_errors_cross_from_the_child(redis_url: str, type_name: str) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", **FAST)(isolated.fail_permanently)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        job_id = await p.enqueue(type_name, {})
        await finish(p, type_name, [job_id], JobState.DEAD)
        st = await p.status(type_name, job_id)
    assert st is not None and st.reason == "permanent" and st.error == "PermanentError: no way"
    assert st.traceback is not None and "fail_permanently" in st.traceback


async def test_grace_expiry_kills_a_child_and_releases(redis_url: str, r: Redis,
                                                       type_name: str) -> None:
    reg = Registry()
    reg.handler(type_name, isolation="process", **FAST)(isolated.sleep_then_mark)
    keys = {"pid_key": f"test:{{{type_name}}}:pid", "done_key": f"test:{{{type_name}}}:done"}
    async with Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {"url": redis_url, "sleep": 2, **keys})
        worker = Worker(redis_url, reg, grace_period=0.3)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: r.exists(keys["pid_key"]), 15)
            t0 = time.monotonic()
            worker.stop()
        took = time.monotonic() - t0
        st = await p.status(type_name, job_id)
    await anyio.sleep(2)
    assert st is not None and st.state is JobState.WAITING and st.attempts == 0
    assert await r.exists(keys["done_key"]) == 0
    assert took < 1.5


def test_process_isolation_needs_an_importable_sync_handler(type_name: str) -> None:
    reg = Registry()

    def local(job: Job) -> None: ...

    async def asynchronous(job: Job) -> None: ...

    with pytest.raises(ConfigError, match="importable"):
        reg.handler(type_name, isolation="process")(local)
    with pytest.raises(ConfigError, match="def"):
        reg.handler(type_name, isolation="process")(asynchronous)
    with pytest.raises(ConfigError, match="isolation"):
        reg.handler(type_name, isolation="fork")
    with pytest.raises(ConfigError, match="max_tasks_per_child"):
        reg.handler(type_name, isolation="process", max_tasks_per_child=-1)
