"""The client library replays a call whose reply was lost (redis-py's retry on a
connection error). A replayed enqueue is the same job, reported as success; a replayed ack
counts as what it was. The proxy forwards the request, then drops the connection before
the reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.contract import JobState, Outcome
from streamjobs.keys import TypeKeys
from streamjobs.metrics import WorkerMetrics
from streamjobs.producer import JobSpec
from streamjobs.scripts import source
from tests.helpers import reply_dropping_proxy, running, stat, wait_for, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


async def test_a_replayed_enqueue_is_the_same_job(redis_url: str, r: Redis,
                                                  type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    async with reply_dropping_proxy(redis_url) as proxy, Producer(proxy.url) as p:
        await p.enqueue(type_name, {"warm": True})  # group and scripts in place
        proxy.arm(b"EVALSHA")
        assert await p.enqueue(type_name, {"n": 1}, job_id="mine-1") == "mine-1"
        proxy.arm(b"EVALSHA")
        anonymous = await p.enqueue(type_name, {"n": 2})
        proxy.arm(b"EVALSHA")
        batch = await p.enqueue_batch(type_name, [JobSpec({"n": 3}, "mine-2"), JobSpec(4)])
        proxy.arm(b"EVALSHA")
        many = await p.enqueue_many(type_name, [5, 6, 7])
        assert proxy.dropped == 4
    assert [res.code for res in batch] == [0, 0] and batch[0].job_id == "mine-2"
    assert await r.xlen(tk.stream) == 1 + 1 + 1 + 2 + 3  # each job once
    assert await stat(r, tk, "enqueued") == 8
    ids = {f[b"id"].decode() for _, f in await r.xrange(tk.stream)}
    assert {"mine-1", anonymous, "mine-2", *many} <= ids


async def test_someone_elses_id_is_still_a_duplicate(redis_url: str, type_name: str) -> None:
    from streamjobs import DuplicateJob

    async with Producer(redis_url) as p, Producer(redis_url) as other:
        await p.enqueue(type_name, {}, job_id="taken")
        with pytest.raises(DuplicateJob):
            await other.enqueue(type_name, {}, job_id="taken")
        with pytest.raises(DuplicateJob):
            await p.enqueue(type_name, {}, job_id="taken")  # a second call, not a replay


async def test_a_replayed_ack_is_counted_as_completed(redis_url: str, r: Redis,
                                                      type_name: str) -> None:
    """The worker's ack lands, its reply is lost, redis-py sends it again: the job counts
    as completed once, not as an ack refused."""
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    metrics = WorkerMetrics()
    started, release = anyio.Event(), anyio.Event()

    @reg.handler(type_name)
    async def h(job: Job) -> str:
        started.set()
        await release.wait()
        return "done"

    ack_sha = (await r.script_load(source("ack"))).encode()  # loaded: the ack lands
    async with reply_dropping_proxy(redis_url) as proxy, Producer(redis_url) as p:
        job_id = await p.enqueue(type_name, {})
        async with running(Worker(proxy.url, reg, metrics=metrics)):
            await started.wait()
            proxy.arm(ack_sha)
            release.set()
            await wait_state(p, type_name, job_id, JobState.COMPLETED)
            await wait_for(lambda: proxy.dropped == 1)
            await wait_for(lambda: metrics.jobs.labels(type_name, Outcome.COMPLETED)
                           ._value.get() == 1)
    assert metrics.jobs.labels(type_name, Outcome.ACK_REFUSED)._value.get() == 0
    assert await stat(r, tk, "completed") == 1
