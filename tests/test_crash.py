"""Workers in their own processes: SIGKILL, poison jobs, SIGTERM, server restarts."""

from __future__ import annotations

import signal
import tempfile
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.contract import JobState
from streamjobs.embedded import EmbeddedServer
from streamjobs.keys import GROUP, TypeKeys
from tests.helpers import pending, running, spawn_worker, stat, wait_equal, wait_for

if TYPE_CHECKING:
    import subprocess

    from redis.asyncio import Redis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def worker_proc(url: str, type_name: str, procs: list[Any], *args: str,
                **env: str) -> subprocess.Popen[bytes]:
    p = spawn_worker(url, "tests.workers", *args, env={"SJ_TEST_TYPE": type_name, **env})
    procs.append(p)
    return p


async def consumers(r: Redis, tk: TypeKeys) -> list[str]:
    return [c["name"].decode() for c in await r.xinfo_consumers(tk.stream, GROUP)]


async def test_sigkilled_worker_jobs_complete_elsewhere_after_visibility_timeout(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, [{"sleep_first_delivery": 60} for _ in range(4)])
    victim = worker_proc(redis_url, type_name, procs, "--concurrency", "4", SJ_VT="1.5")
    await wait_equal(lambda: pending(r, tk), 4, timeout=15)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert await stat(r, tk, "completed") == 0
    worker_proc(redis_url, type_name, procs, "--concurrency", "4", SJ_VT="1.5")
    await wait_equal(lambda: stat(r, tk, "completed"), 4, timeout=20)
    assert await stat(r, tk, "reclaimed") == 4
    async with Producer(redis_url) as p:
        for job_id in ids:
            st = await p.status(type_name, job_id)
            assert st is not None and st.state is JobState.COMPLETED


async def test_job_that_kills_its_worker_every_time_ends_dead(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {"die": True})
        spawns = 0
        while spawns < 6:
            st = await p.status(type_name, job_id)
            if st is not None and st.state is JobState.DEAD:
                break
            w = worker_proc(redis_url, type_name, procs, SJ_VT="0.6", SJ_MAX_DELIVERIES="2")
            spawns += 1
            with anyio.move_on_after(8):
                while w.poll() is None:
                    st = await p.status(type_name, job_id)
                    if st is not None and st.state is JobState.DEAD:
                        break
                    await anyio.sleep(0.05)
        st = await p.status(type_name, job_id)
    assert st is not None and st.state is JobState.DEAD and st.reason == "poison"
    assert st.error is not None and "delivered 2 times" in st.error
    assert int(await r.hget(f"test:{{{type_name}}}:runs", job_id)) == 2
    assert procs[-1].poll() is None  # the worker that dead-lettered it is still alive
    assert await pending(r, tk) == 0


async def test_sigterm_releases_unfinished_jobs_and_exits_zero(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, [{"sleep": 60} for _ in range(3)])
        w = worker_proc(redis_url, type_name, procs, "--concurrency", "3", "--grace", "0.5")
        await wait_equal(lambda: pending(r, tk), 3, timeout=15)
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=15) == 0
        assert await pending(r, tk) == 0
        assert await r.xlen(tk.stream) == 3
        assert await stat(r, tk, "released") == 3
        for job_id in ids:
            st = await p.status(type_name, job_id)
            assert st is not None and st.state is JobState.WAITING and st.attempts == 0


async def test_worker_survives_a_server_restart(type_name: str) -> None:
    reg = Registry()
    done: list[Any] = []

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        done.append(job.payload)

    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedServer(data, port=0).start()
        try:
            async with running(Worker(server.url, reg)), Producer(server.url) as p:
                await p.enqueue(type_name, {"before": True})
                await wait_for(lambda: len(done) == 1)
                server.stop()  # SIGTERM: the AOF is synced
                await anyio.sleep(1.0)  # the worker is cut off meanwhile
                server = EmbeddedServer(data, port=server.port).start()
                await p.enqueue(type_name, {"after": True})
                await wait_for(lambda: len(done) == 2, timeout=20)
            assert done == [{"before": True}, {"after": True}]
        finally:
            server.stop()


async def test_worker_processes_flag_runs_n_processes(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        await p.enqueue_many(type_name, [{"sleep": 0.2} for _ in range(8)])
    parent = worker_proc(redis_url, type_name, procs, "--processes", "2", "--concurrency", "2")
    await wait_equal(lambda: stat(r, tk, "completed"), 8, timeout=30)
    names = await consumers(r, tk)
    assert len({n.split(":")[1] for n in names}) == 2  # two pids consumed
    started = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=20) == 0
    # Nothing was in flight: both children stop without waiting out their grace period.
    assert time.monotonic() - started < 5
    assert await pending(r, tk) == 0
