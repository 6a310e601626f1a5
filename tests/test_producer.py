"""Producers: the blocking facade, bulk enqueue, validation before anything is written."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from streamjobs import Producer, SyncProducer
from streamjobs.contract import JobState
from streamjobs.errors import DuplicateJob, PayloadTooLarge
from streamjobs.keys import TypeKeys


def test_sync_producer_enqueues_and_reads_status(redis_url: str, type_name: str) -> None:
    with SyncProducer(redis_url) as p:
        job_id = p.enqueue(type_name, {"a": 1}, job_id="sync-1", headers={"h": "v"})
        ids = p.enqueue_many(type_name, [1, 2, 3])
        st = p.status(type_name, job_id)
        with pytest.raises(DuplicateJob):
            p.enqueue(type_name, {}, job_id="sync-1")
        again = p.enqueue(type_name, {}, dedup_key="once")
        assert p.enqueue(type_name, {}, dedup_key="once").deduplicated
        assert p.cancel(type_name, again) == JobState.WAITING
        assert p.status(type_name, again).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert job_id == "sync-1" and len(ids) == 3
    assert st is not None and st.state is JobState.WAITING
    assert st.payload == {"a": 1} and st.headers == {"h": "v"}


@pytest.mark.anyio
async def test_enqueue_many_keeps_order_across_chunks(redis_url: str, r: Redis,
                                                      type_name: str) -> None:
    async with Producer(redis_url) as p:
        ids = await p.enqueue_many(type_name, [{"i": i} for i in range(4321)])
    assert len(set(ids)) == 4321
    rows = await r.xrange(TypeKeys("sj", type_name).stream)
    assert [row[1][b"id"].decode() for row in rows] == ids
    assert rows[1234][1][b"payload"] == b'{"i":1234}'


@pytest.mark.anyio
async def test_bad_input_writes_nothing(redis_url: str, r: Redis, type_name: str) -> None:
    from streamjobs import Settings

    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url, settings=Settings(max_payload_bytes=100)) as p:
        with pytest.raises(PayloadTooLarge):
            await p.enqueue(type_name, "x" * 200)
        with pytest.raises(PayloadTooLarge):
            await p.enqueue_many(type_name, [1, "x" * 200])
        with pytest.raises(ValueError, match="invalid job id"):
            await p.enqueue(type_name, 1, job_id="has space")
        with pytest.raises(ValueError, match="invalid job type"):
            await p.enqueue("bad type", 1)
    assert await r.xlen(tk.stream) == 0
