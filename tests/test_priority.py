"""Priority levels end to end: ``high`` jobs of a type start before its ``normal`` ones and
those before ``low`` ones; a delayed, retried, released or dead-retried job keeps its
level; a type that never uses levels reads one stream; a worker named ``T!low`` serves
the low level alone (the documented way not to starve it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from redis.exceptions import ResponseError

from streamjobs import Job, JobState, Producer, Registry, Worker
from streamjobs.contract import Priority
from streamjobs.dead import DeadLetters
from streamjobs.errors import ConfigError, InvalidArgument
from streamjobs.keys import TypeKeys
from streamjobs.producer import JobSpec
from streamjobs.scripts import EnqueueItem, Scripts
from tests.helpers import running, stat, wait_equal, wait_for, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


def _order_recorder(type_name: str, **policy: object) -> tuple[Registry, list[str]]:
    order: list[str] = []
    reg = Registry()

    @reg.handler(type_name, **policy)  # type: ignore[arg-type]
    async def work(job: Job) -> None:
        order.append(job.payload["level"])

    return reg, order


async def test_every_high_job_runs_before_any_low_one(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg, order = _order_recorder(type_name)
    async with Producer(redis_url) as p:
        for i in range(200):  # interleaved, low first: the stream order is no help
            await p.enqueue(type_name, {"level": "low", "i": i}, priority="low")
            await p.enqueue(type_name, {"level": "high", "i": i}, priority="high")
        tk = TypeKeys("sj", type_name)
        assert await r.xlen(tk.at(Priority.HIGH).stream) == 200
        assert await r.xlen(tk.at(Priority.LOW).stream) == 200
        assert await r.xlen(tk.stream) == 0  # normal jobs: the type's own stream
        async with running(Worker(redis_url, reg, concurrency=1)):
            await wait_for(lambda: _equal(len(order), 400), timeout=30)
    assert order == ["high"] * 200 + ["low"] * 200


async def test_levels_with_normal_and_a_high_job_arriving_while_low_ones_run(
    redis_url: str, type_name: str,
) -> None:
    reg, order = _order_recorder(type_name)
    async with Producer(redis_url) as p:
        for _ in range(20):
            await p.enqueue(type_name, {"level": "low"}, priority="low")
        for _ in range(20):
            await p.enqueue(type_name, {"level": "normal"})
        await p.enqueue(type_name, {"level": "high"}, priority="high")
        gate = anyio.Event()
        seen_low = 0

        reg2 = Registry()

        @reg2.handler(type_name)
        async def work(job: Job) -> None:
            nonlocal seen_low
            order.append(job.payload["level"])
            if job.payload["level"] == "low":
                seen_low += 1
                if seen_low == 5:
                    gate.set()
            await anyio.sleep(0.01)

        async with running(Worker(redis_url, reg2, concurrency=2)):
            await gate.wait()
            await p.enqueue(type_name, {"level": "late-high"}, priority="high")
            await wait_for(lambda: _equal(len(order), 42), timeout=30)
    assert order[0] == "high"
    assert order[1:21] == ["normal"] * 20
    late = order.index("late-high")
    # claimed within the next claim or two after its enqueue: well before the lows end
    assert order[21:].count("low") == 20 and late < 21 + 5 + 3


async def test_a_retried_high_job_stays_high(redis_url: str, r: Redis, type_name: str) -> None:
    order: list[str] = []
    reg = Registry()

    @reg.handler(type_name, max_attempts=3, backoff_base=0.01, immediate_retries=0)
    async def work(job: Job) -> None:
        order.append(f"{job.payload}:{job.attempt}")
        if job.payload == "high" and job.attempt == 1:
            raise RuntimeError("once")
        await anyio.sleep(0.01)

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        high = await p.enqueue(type_name, "high", priority="high")
        async with running(Worker(redis_url, reg, concurrency=1)):
            await wait_for(lambda: _has(order, "high:1"))
            # the retry waits in the delayed set; meanwhile a backlog of low jobs
            await p.enqueue_batch(type_name, [JobSpec("low", priority="low")] * 30)
            await wait_state(p, type_name, high, JobState.COMPLETED, timeout=15)
            await wait_equal(lambda: stat(r, tk, "completed"), 31, timeout=15)
    # promoted back into the high stream: it ran before most of the low backlog
    assert order.index("high:2") < 10, order


async def test_delayed_and_dead_retried_jobs_keep_their_level(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    tk = TypeKeys("sj", type_name)
    high = tk.at(Priority.HIGH)
    reg = Registry()

    @reg.handler(type_name, max_attempts=1)
    async def work(job: Job) -> None:
        raise RuntimeError("dead")

    async with Producer(redis_url) as p:
        job = await p.enqueue(type_name, "x", priority="high", delay=0.2)
        st = await p.status(type_name, job)
        assert st is not None and st.state is JobState.DELAYED
        async with running(Worker(redis_url, reg, concurrency=1)):
            await wait_state(p, type_name, job, JobState.DEAD, timeout=10)
        assert await r.xlen(tk.stream) == 0
        # no worker: the dead job goes back to the high stream, its record says so
        dead = DeadLetters(redis_url)
        await dead.retry(type_name, job)
        await dead.aclose()
        assert await r.xlen(high.stream) == 1
        assert await r.hget(tk.job(job), "priority") == b"high"
        # cancelled while waiting: its entry leaves the high stream
        assert await p.cancel(type_name, job) == "waiting"
        assert await r.xlen(high.stream) == 0


async def test_a_type_without_levels_reads_one_stream(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg, order = _order_recorder(type_name)
    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {"level": "normal"}, priority="normal")
        async with running(Worker(redis_url, reg, concurrency=4)) as w:
            await wait_for(lambda: _equal(len(order), 1))
            assert w._live == {type_name}
            tk = TypeKeys("sj", type_name)
            assert await r.exists(tk.at(Priority.HIGH).stream, tk.at(Priority.LOW).stream) == 0
            # a level's first job: its stream is found and read within about a second
            job = await p.enqueue(type_name, {"level": "high"}, priority="high")
            await wait_state(p, type_name, job, JobState.COMPLETED, timeout=5)
            assert w._live == {type_name, f"{type_name}!high"}


async def test_a_worker_of_the_low_level_alone(redis_url: str, type_name: str) -> None:
    reg, order = _order_recorder(type_name)
    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {"level": "high"}, priority="high")
        await p.enqueue(type_name, {"level": "normal"})
        await p.enqueue(type_name, {"level": "low"}, priority="low")
        async with running(Worker(redis_url, reg, types=[f"{type_name}!low"])):
            await wait_for(lambda: _equal(len(order), 1))
            await anyio.sleep(0.3)
    assert order == ["low"]
    with pytest.raises(ConfigError, match="high, normal or low"):
        Worker(redis_url, reg, types=[f"{type_name}!urgent"])


async def test_a_bad_priority_is_refused_and_nothing_enqueued(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    async with Producer(redis_url) as p:
        with pytest.raises(InvalidArgument, match="priority must be one of"):
            await p.enqueue(type_name, 1, priority="urgent")
    tk = TypeKeys("sj", type_name)
    # the script refuses it too (a client in another language calling it)
    with pytest.raises(ResponseError, match="priority must be high, normal or low"):
        await Scripts(r).enqueue(tk, [EnqueueItem(("payload", "1", "priority", "urgent"))])
    assert await r.exists(tk.stream) == 0


async def _equal(a: int, b: int) -> bool:
    return a == b


async def _has(items: list[str], item: str) -> bool:
    return item in items


async def test_stats_and_listings_count_every_level(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    from streamjobs.counts import type_stats
    from streamjobs.listing import list_jobs

    async with Producer(redis_url) as p:
        low = [await p.enqueue(type_name, i, priority="low") for i in range(3)]
        normal = [await p.enqueue(type_name, i) for i in range(2)]
        high = [await p.enqueue(type_name, i, priority="high") for i in range(2)]
        st = await p.status(type_name, high[0])
        assert st is not None and st.priority == "high" and st.payload == 0
    tk = TypeKeys("sj", type_name)
    stats = await type_stats(r, tk)
    assert stats.waiting == 7
    assert stats.waiting_by_priority == {"high": 2, "normal": 2, "low": 3}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:  # pages of 2 cross the levels in the order the jobs start
        page = await list_jobs(r, tk, JobState.WAITING, cursor=cursor, limit=2)
        seen += [j.id for j in page.jobs]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == high + normal + low
    assert pages <= 5
    with pytest.raises(InvalidArgument):
        await list_jobs(r, tk, JobState.WAITING, cursor="high:nope", limit=2)


def test_cli_enqueues_with_a_priority_and_stats_show_the_levels(
    redis_url: str, type_name: str,
) -> None:
    import orjson

    from tests.test_cli import cli, one_line_error

    res = cli("enqueue", type_name, "1", "--priority", "low", url=redis_url)
    assert res.returncode == 0, res.stderr
    st = orjson.loads(cli("status", type_name, res.stdout.strip(), url=redis_url).stdout)
    assert st["priority"] == "low" and st["state"] == "waiting"
    one_line_error(cli("enqueue", type_name, "1", "--priority", "urgent", url=redis_url),
                   "invalid choice")
    cli("enqueue", type_name, "2", url=redis_url)
    stats = cli("stats", url=redis_url).stdout
    line = next(row for row in stats.splitlines() if type_name in row)
    assert line.endswith("normal=1 low=1"), stats


async def test_api_enqueue_and_a_schedule_carry_the_priority(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    import httpx

    from streamjobs.api.app import create_app
    from streamjobs.config import Settings

    app = create_app(redis_url, Settings(redis_url=redis_url))
    tk = TypeKeys("sj", type_name)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as client:
        res = await client.post(f"/jobs/{type_name}", json={"payload": 1, "priority": "high"})
        assert res.status_code == 201, res.text
        job = (await client.get(f"/jobs/{type_name}/{res.json()['id']}")).json()
        assert job["priority"] == "high"
        bad = await client.post(f"/jobs/{type_name}", json={"payload": 1, "priority": "x"})
        assert bad.status_code == 422
        res = await client.put(f"/schedules/{type_name}-s", json={
            "type": type_name, "every": 3600, "payload": {}, "priority": "low", "paused": True})
        assert res.status_code == 200, res.text
        assert res.json()["priority"] == "low"
        ran = await client.post(f"/schedules/{type_name}-s/run-now")
        assert ran.status_code == 201, ran.text
    assert await r.xlen(tk.at(Priority.HIGH).stream) == 1
    assert await r.xlen(tk.at(Priority.LOW).stream) == 1
