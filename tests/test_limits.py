"""Concurrency limits end to end: ``max_running`` and ``max_running_per_key`` across
workers, slots freed by every final transition, none leaked by a SIGKILLed worker."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, JobState, Producer, Registry, Worker
from streamjobs.errors import ConfigError
from streamjobs.keys import TypeKeys
from tests.helpers import pending, running, spawn_worker, stat, wait_equal, wait_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


def _slots(tk: TypeKeys, scope: str = "@") -> str:
    return f"{tk.base}slots:{scope}"


async def test_max_running_holds_across_three_workers(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    now, peak, done = 0, 0, 0
    reg = Registry()

    @reg.handler(type_name, max_running=2)
    async def work(job: Job) -> None:
        nonlocal now, peak, done
        now += 1
        peak = max(peak, now)
        await anyio.sleep(0.05)
        now -= 1
        done += 1

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        await p.enqueue_many(type_name, list(range(40)))
    t0 = time.monotonic()
    async with running(Worker(redis_url, reg, concurrency=10)), \
            running(Worker(redis_url, reg, concurrency=10)), \
            running(Worker(redis_url, reg, concurrency=10)):
        await wait_for(lambda: _equal(done, 40), timeout=20)
    took = time.monotonic() - t0
    print(f"max_running=2: 40 jobs of 50 ms, peak {peak} running, {took:.2f}s")
    assert peak == 2
    assert await stat(r, tk, "completed") == 40
    assert await stat(r, tk, "held") > 0  # some were parked, none failed
    assert await stat(r, tk, "retried") == 0
    assert await r.exists(_slots(tk), f"{tk.base}held:@") == 0  # every slot freed


async def _equal(a: int, b: int) -> bool:
    return a == b


async def test_max_running_per_key_runs_one_keys_jobs_one_at_a_time_in_order(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    runs: list[tuple[str, int, float, float]] = []
    reg = Registry()

    @reg.handler(type_name, max_running_per_key=1)
    async def work(job: Job) -> None:
        t = time.monotonic()
        await anyio.sleep(0.02)
        runs.append((job.payload["k"], job.payload["n"], t, time.monotonic()))

    async with Producer(redis_url) as p:
        for n in range(12):
            for k in ("a", "b"):
                await p.enqueue(type_name, {"k": k, "n": n}, key=k)
        await p.enqueue(type_name, {"k": "-", "n": 0})  # no key: not limited
    async with running(Worker(redis_url, reg, concurrency=8)):
        await wait_for(lambda: _equal(len(runs), 25), timeout=20)
    for k in ("a", "b"):
        mine = [x for x in runs if x[0] == k]
        assert [x[1] for x in mine] == list(range(12))  # in order
        assert all(x[3] <= y[2] for x, y in zip(mine, mine[1:], strict=False))  # one at a time
    a = [x for x in runs if x[0] == "a"]
    b = [x for x in runs if x[0] == "b"]
    assert any(x[2] < y[3] and y[2] < x[3] for x in a for y in b)  # keys run side by side
    tk = TypeKeys("sj", type_name)
    assert await r.keys(f"{tk.base}slots:*") == []


async def test_a_failed_or_cancelled_job_frees_its_slot(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg = Registry()

    @reg.handler(type_name, max_running=1, max_attempts=2, backoff_base=0.05,
                 immediate_retries=0)
    async def work(job: Job) -> None:
        if job.payload == "fail":
            raise RuntimeError("no")
        if job.payload == "long":
            await anyio.sleep(30)

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=4)):
        failing = await p.enqueue(type_name, "fail")
        await wait_for(lambda: _state(p, type_name, failing, JobState.DEAD), timeout=10)
        long = await p.enqueue(type_name, "long")
        await wait_equal(lambda: r.zcard(_slots(tk)), 1)
        after = await p.enqueue(type_name, "ok")
        await wait_for(lambda: _state(p, type_name, after, JobState.DELAYED))
        st = await p.status(type_name, after)
        assert st is not None and st.attempts == 0  # parked: no attempt spent
        await p.cancel(type_name, long)
        await wait_for(lambda: _state(p, type_name, after, JobState.COMPLETED), timeout=10)
    assert await r.exists(_slots(tk)) == 0


async def _state(p: Producer, type_name: str, job_id: str, want: JobState) -> bool:
    st = await p.status(type_name, job_id)
    return st is not None and st.state is want


def test_limits_must_not_be_negative() -> None:
    with pytest.raises(ConfigError):
        Registry().handler("t", max_running=-1)


@pytest.mark.slow
async def test_a_sigkilled_worker_holding_a_slot_does_not_leak_it(
    redis_url: str, r: Redis, type_name: str, procs: list[Any],
) -> None:
    tk = TypeKeys("sj", type_name)
    env = {"SJ_TEST_TYPE": type_name, "SJ_VT": "1.5", "SJ_MAX_RUNNING": "1"}
    victim = spawn_worker(redis_url, "tests.workers", "--concurrency", "4", env=env)
    procs.append(victim)
    async with Producer(redis_url) as p:
        first = await p.enqueue(type_name, {"sleep_first_delivery": 60})
        await wait_equal(lambda: pending(r, tk), 1, timeout=15)
        await p.enqueue_many(type_name, [{"sleep": 0.05}] * 2)
        await wait_equal(lambda: stat(r, tk, "held"), 2, timeout=10)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert await r.zrange(_slots(tk), 0, -1) == [first.encode()]
        procs.append(spawn_worker(redis_url, "tests.workers", "--concurrency", "4", env=env))
        await wait_equal(lambda: stat(r, tk, "completed"), 3, timeout=20)
    assert await stat(r, tk, "reclaimed") == 1
    assert await r.exists(_slots(tk)) == 0


async def test_api_and_cli_show_what_the_limits_hold(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    import httpx

    from streamjobs.api.app import create_app
    from streamjobs.config import Settings
    from tests.test_cli import cli

    reg = Registry()

    @reg.handler(type_name, max_running=1, rate_limit="1000/s")
    async def work(job: Job) -> None:
        await anyio.sleep(30 if job.payload == "long" else 0)

    app = create_app(redis_url, Settings(redis_url=redis_url))
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p, running(Worker(redis_url, reg, concurrency=4)), \
            app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://api") as client:
        long = await p.enqueue(type_name, "long")
        await wait_equal(lambda: r.zcard(_slots(tk)), 1)
        await p.enqueue_many(type_name, ["a", "b"])
        await wait_equal(lambda: stat(r, tk, "held"), 2)
        body = (await client.get(f"/types/{type_name}")).json()
        assert body["limits"]["running"] == 1 and body["limits"]["held"] == 2
        assert body["limits"]["rate_window_starts"] >= 1
        assert body["policy"]["max_running"] == 1 and body["policy"]["rate_limit"] == "1000/s"
        shown = await anyio.to_thread.run_sync(
            lambda: cli("types", "show", type_name, url=redis_url))
        assert shown.returncode == 0, shown.stderr
        import orjson
        detail = orjson.loads(shown.stdout)
        assert detail["limits"]["running"] == 1 and detail["limits"]["held"] == 2
        assert detail["policy"]["max_running"] == 1 and detail["workers"] == 1
        await p.cancel(type_name, long)
        await wait_equal(lambda: stat(r, tk, "completed"), 2)
        body = (await client.get(f"/types/{type_name}")).json()
        assert body["limits"]["running"] == 0 and body["limits"]["held"] == 0
