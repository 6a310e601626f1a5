"""Hostile entries and foreign producers: nothing a stream holds kills a worker, every bad
entry ends dead with its reason, and the documented foreign-producer contract holds."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest
import redis as sync_redis

from streamjobs import DeadLetters, Job, Producer, Registry, Worker
from streamjobs.codes import Code
from streamjobs.contract import Failure, JobState, Outcome
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.metrics import WorkerMetrics
from streamjobs.retry import Policy
from streamjobs.scripts import AckItem, FailArgs, FailItem, ReleaseItem, Scripts, source
from streamjobs.settle import Settler
from streamjobs.status import job_status
from streamjobs.streams import ensure_group
from tests.helpers import FAST, pending, running, stat, wait_equal, wait_state

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio

#: Entries that break docs/protocol.md, each with a word its dead error must carry.
BAD: list[tuple[list[bytes], str]] = [
    ([b"payload", b"1", b"attempts", b"1.5"], "attempts"),
    ([b"payload", b"1", b"attempts", b"1e99"], "attempts"),
    ([b"payload", b"1", b"attempts", b"99999999999999999999"], "attempts"),
    ([b"payload", b"1", b"max_attempts", b"1e99"], "max_attempts"),
    ([b"payload", b"1", b"enqueued_at", b"9" * 400], "enqueued_at"),
    ([b"payload", b"1", b"timeout", b"inf"], "timeout"),
    ([b"payload", b"1", b"id", b"a b"], "id"),
    ([b"payload", b"1", b"id", b"x\ny"], "id"),
    ([b"payload", b"1", b"id", b"x" * 10_240], "id"),
    ([b"payload", b"1", b"id", b"\xff\xfe"], "id"),
    ([b"payload", b"1", *[b"h%d" % i if j == 0 else b"v" for i in range(5000) for j in (0, 1)]],
     "5001 fields"),
    ([b"payload", b"1", b"id", b"a", b"id", b"b"], "more than once"),
    ([b"payload", b"1", b"payload", b"2"], "more than once"),
    ([b"nothing", b"here"], "no payload"),
    ([b"payload", b"{not json"], "JSON"),
]


async def xadd_raw(r: Redis, tk: TypeKeys, flat: list[bytes]) -> str:
    """A plain XADD exactly as a foreign producer sends it (repeated names included)."""
    return (await r.execute_command("XADD", tk.stream, "*", *flat)).decode()


async def test_every_malformed_entry_ends_dead_and_the_worker_keeps_running(
    redis_url: str, r: Redis, type_name: str
) -> None:
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    ran: list[Any] = []

    @reg.handler(type_name, **FAST)
    async def h(job: Job) -> None:
        ran.append(job.payload)

    async with Producer(redis_url) as p:
        await ensure_group(r, tk)
        entries = [await xadd_raw(r, tk, flat) for flat, _ in BAD]
        valid = await p.enqueue(type_name, {"ok": True})
        async with running(Worker(redis_url, reg, concurrency=4)):
            await wait_state(p, type_name, valid, JobState.COMPLETED)
            await wait_equal(lambda: stat(r, tk, "dead"), len(BAD))
        assert ran == [{"ok": True}]
        assert await pending(r, tk) == 0 and await r.xlen(tk.stream) == 0
        dead, _ = await DeadLetters(r).list(type_name, count=100)
        by_entry = {d.id: d for d in dead}
        for entry, (_, word) in zip(entries, BAD, strict=True):
            d = by_entry[entry]  # addressable by its entry id: its own id is no id
            assert d.reason == Failure.MALFORMED and word in d.error, (entry, d.error)
            st = await job_status(r, tk, entry)
            assert st is not None and st.state is JobState.DEAD and st.reason == "malformed"
    # The listing, retry and purge of the type work on such entries too.
    assert await DeadLetters(r).count(type_name) == len(BAD)
    assert await DeadLetters(r).purge(type_name) == len(BAD)


async def test_the_first_read_refuses_what_every_script_refuses(r: Redis, type_name: str) -> None:
    """Python and Lua agree: each bad entry released by a script is dead as malformed."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    s = Scripts(r)
    for flat, word in BAD[:-1]:  # the payload's JSON is Python's alone to read
        entry = await xadd_raw(r, tk, flat)
        await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
        assert await s.release(tk, GROUP, "c", [ReleaseItem(entry, entry)]) == [Code.OK]
        st = await job_status(r, tk, entry)
        assert st is not None and st.state is JobState.DEAD, flat[:4]
        assert st.reason == "malformed" and st.error is not None and word in st.error
    assert await r.xlen(tk.stream) == 0 and await pending(r, tk) == 0


async def test_release_keys_a_repeated_id_by_its_entry(r: Redis, type_name: str) -> None:
    """A caller that read the last of two ids (a plain dict) still gets the entry keyed as
    everywhere else: by its entry id, and no record of the id it named."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    entry = await xadd_raw(r, tk, [b"payload", b"1", b"id", b"a", b"id", b"b"])
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
    assert await Scripts(r).release(tk, GROUP, "c", [ReleaseItem(entry, "b")]) == [Code.OK]
    st = await job_status(r, tk, entry)
    assert st is not None and st.state is JobState.DEAD and st.reason == "malformed"
    assert not await r.exists(tk.job("b"))


async def test_a_huge_entry_is_dead_lettered_not_lost(r: Redis, type_name: str) -> None:
    """fail.lua used to XDEL before an XADD that cannot take 5,000 fields: the job was lost."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    flat = [b"payload", b"1", *[x for i in range(5000) for x in (b"h%d" % i, b"v")]]
    entry = await xadd_raw(r, tk, flat)
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
    [res] = await Scripts(r).fail(
        tk, GROUP, "c", [FailItem(entry, entry, FailArgs("boom"))], max_attempts=3,
        immediate_retries=1, backoff_base_ms=10, backoff_cap_ms=10, jitter=0.0)
    assert (res.code, res.state) == (Code.OK, JobState.DEAD)
    [(_, fields)] = await r.xrange(tk.dead)
    assert fields[b"reason"] == b"malformed" and b"keeps the first 256" in fields[b"error"]
    assert fields[b"f:payload"] == b"1" and len(fields) == 5 + 256


# ---- foreign producers: a reused id ------------------------------------------------------

async def test_a_plain_xadd_reusing_a_completed_id_never_runs(
    redis_url: str, r: Redis, type_name: str
) -> None:
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    runs: list[str] = []

    @reg.handler(type_name, **FAST)
    async def h(job: Job) -> str:
        runs.append(job.id)
        return "first"

    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {"n": 1}, job_id="order-1")
        async with running(Worker(redis_url, reg)):
            await wait_state(p, type_name, "order-1", JobState.COMPLETED)
            ttl_before = await r.pttl(tk.job("order-1"))
            dup = await xadd_raw(r, tk, [b"payload", b'{"n":2}', b"id", b"order-1"])
            await wait_equal(lambda: stat(r, tk, "dead"), 1)
            await wait_equal(lambda: pending(r, tk), 0)
        assert runs == ["order-1"]
        st = await p.status(type_name, "order-1")
        assert st is not None and st.state is JobState.COMPLETED and st.result == "first"
        assert 0 < await r.pttl(tk.job("order-1")) <= ttl_before  # not PERSISTed
        dead, _ = await DeadLetters(r).list(type_name)
        assert [(d.id, d.reason, d.headers, d.payload) for d in dead] == [
            (dup, "duplicate id", {}, {"n": 2})]
        assert (await r.xrange(tk.dead))[0][1][b"f:id"] == b"order-1"  # kept as it came


async def test_a_refused_ack_never_leaves_the_entry_pending(r: Redis, type_name: str) -> None:
    """A duplicate that got past the fetch (it raced the first job's completion): its ack is
    refused as WRONG_STATE, and the settler dead-letters it instead of leaving it pending."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    s = Scripts(r)
    await r.hset(tk.job("order-1"), mapping={"state": "completed", "entry": "1-1"})
    dup = await xadd_raw(r, tk, [b"payload", b"1", b"id", b"order-1"])
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
    metrics = WorkerMetrics()
    settler = Settler(s, {type_name: tk}, {type_name: Policy()},
                      "c", 60_000, metrics)
    settler.open()
    settler.ok(type_name, dup, "order-1", b"", idle=True)
    await settler.flush_all()
    assert await pending(r, tk) == 0 and await r.xlen(tk.stream) == 0
    assert await r.hgetall(tk.job("order-1")) == {b"state": b"completed", b"entry": b"1-1"}
    st = await job_status(r, tk, dup)
    assert st is not None and st.state is JobState.DEAD and st.reason == "duplicate id"


async def test_reclaim_leaves_another_jobs_record_alone(r: Redis, type_name: str) -> None:
    """reclaim used to dead-letter a duplicate as poison over the completed record."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    await r.hset(tk.job("order-1"), mapping={"state": "completed", "entry": "1-1"})
    await r.pexpire(tk.job("order-1"), 60_000)
    dup = await xadd_raw(r, tk, [b"payload", b"1", b"id", b"order-1"])
    await r.xreadgroup(GROUP, "dead-worker", {tk.stream: ">"}, count=1)
    res = await Scripts(r).reclaim(tk, GROUP, "c", 0, 10, 5)
    assert res.dead_count == 1 and res.claimed == []
    assert await r.hgetall(tk.job("order-1")) == {b"state": b"completed", b"entry": b"1-1"}
    assert await r.pttl(tk.job("order-1")) > 0
    st = await job_status(r, tk, dup)
    assert st is not None and st.reason == "duplicate id"


async def test_the_engines_own_ids_cost_no_read_at_fetch(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """enqueue.lua claims an id in the record before it writes the entry (``id_claimed``),
    so only a plain XADD's ``id`` is read at fetch: the read cost a quarter of the drain."""
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    reg.handler(type_name, **FAST)(_noop)
    async with Producer(redis_url) as p:
        ids = [await p.enqueue(type_name, {"n": i}) for i in range(20)]
        fields = (await r.xrange(tk.stream, count=1))[0][1]
        assert fields[b"id_claimed"] == b"1" and fields[b"id"] == ids[0].encode()
        with _monitor(redis_url) as seen:
            async with running(Worker(redis_url, reg)):
                await wait_equal(lambda: stat(r, tk, "completed"), 20)
                await xadd_raw(r, tk, [b"payload", b"1", b"id", b"plain-1"])
                await wait_equal(lambda: stat(r, tk, "completed"), 21)
    # Commands a client sent (a script's own calls are tagged "lua"): one read, the plain one.
    reads = [line for line in seen if '"HMGET"' in line.upper() and " lua]" not in line]
    assert len(reads) == 1 and "plain-1" in reads[0]


async def test_a_plain_xadd_that_forges_the_claim_runs_once_then_is_a_duplicate(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """The claim is trusted (that is the point of it); the settle still refuses the entry."""
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    runs: list[str] = []

    @reg.handler(type_name, **FAST)
    async def h(job: Job) -> None:
        runs.append(job.id)

    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {"n": 1}, job_id="order-1")
        async with running(Worker(redis_url, reg)):
            await wait_state(p, type_name, "order-1", JobState.COMPLETED)
            await xadd_raw(r, tk, [b"payload", b"2", b"id", b"order-1", b"id_claimed", b"1"])
            await wait_equal(lambda: stat(r, tk, "dead"), 1)
            await wait_equal(lambda: pending(r, tk), 0)
        assert runs == ["order-1", "order-1"]
        st = await p.status(type_name, "order-1")
        assert st is not None and st.state is JobState.COMPLETED


async def _noop(job: Job) -> None:
    return None


@contextlib.contextmanager
def _monitor(url: str) -> Iterator[list[str]]:
    """Every command the server receives meanwhile, as MONITOR prints it."""
    seen: list[str] = []
    client = sync_redis.Redis.from_url(url)
    conn = client.connection_pool.get_connection()
    conn.send_command("MONITOR")
    assert conn.read_response() in (b"OK", "OK")
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if conn.can_read(timeout=0.05):
                seen.append(str(conn.read_response()))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join(5)
        conn.disconnect()
        client.close()


async def test_a_key_that_is_no_record_is_a_duplicate_id(r: Redis, type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    await r.set(tk.job("taken"), "a string, not a record")
    entry = await xadd_raw(r, tk, [b"payload", b"1", b"id", b"taken"])
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
    [res] = await Scripts(r).fail(
        tk, GROUP, "c", [FailItem(entry, "taken", FailArgs("x"))], max_attempts=3,
        immediate_retries=0, backoff_base_ms=10, backoff_cap_ms=10, jitter=0.0)
    assert (res.code, res.state) == (Code.OK, JobState.DEAD)
    assert await r.get(tk.job("taken")) == b"a string, not a record"


# ---- the settler: one poisonous entry affects itself alone --------------------------------

async def test_one_entry_the_server_refuses_does_not_fail_its_batch(
    r: Redis, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    s = Scripts(r)
    ids = [f"j{i}" for i in range(9)]
    entries = [await xadd_raw(r, tk, [b"payload", b"1", b"id", i.encode()]) for i in ids]
    await r.set(tk.job("j4"), "no hash: HMGET fails inside ack.lua")
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=20)
    metrics = WorkerMetrics()
    settler = Settler(s, {type_name: tk}, {type_name: Policy()},
                      "c", 60_000, metrics)
    settler.open()
    for e, i in zip(entries, ids, strict=True):
        settler.ok(type_name, e, i, b"", idle=False)
    caplog.set_level(logging.ERROR, "streamjobs")
    await settler.flush_all()
    assert await stat(r, tk, "completed") == 8
    assert await pending(r, tk) == 1  # the refused one stays pending: reclaimed later
    assert metrics.jobs.labels(type_name, Outcome.COMPLETED)._value.get() == 8
    assert any("failed on the server" in rec.getMessage() for rec in caplog.records)
    # ...and reclaim dead-letters it (its id's key is no record) without touching the key.
    res = await s.reclaim(tk, GROUP, "c2", 0, 10, 5)
    assert res.dead_count == 1 and await pending(r, tk) == 0


async def test_a_replayed_ack_counts_as_completed(r: Redis, type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    s = Scripts(r)
    entry = await xadd_raw(r, tk, [b"payload", b"1"])
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=1)
    assert await s.ack(tk, GROUP, "c", 60_000, [AckItem(entry, entry)]) == [Code.OK]
    metrics = WorkerMetrics()  # the first reply was lost: the worker sends it again
    settler = Settler(s, {type_name: tk}, {type_name: Policy()},
                      "c", 60_000, metrics)
    settler.open()
    settler.ok(type_name, entry, entry, b"", idle=True)
    await settler.flush_all()
    assert metrics.jobs.labels(type_name, Outcome.COMPLETED)._value.get() == 1
    assert metrics.jobs.labels(type_name, Outcome.ACK_REFUSED)._value.get() == 0
    assert await stat(r, tk, "completed") == 1


# ---- foreign producers: status, cancel, enqueue.lua -------------------------------------

async def test_a_waiting_plain_xadd_job_is_readable_and_cancellable_by_its_id(
    r: Redis, redis_url: str, type_name: str
) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        for i in range(2500):  # beyond one scan page
            await r.xadd(tk.stream, {"payload": str(i), "id": f"x-{i}"})
        await r.xadd(tk.stream, {"payload": '{"to":"a@b.c"}', "id": "order-17",
                                 "max_attempts": "5", "traceparent": "00-4bf9-01"})
        st = await p.status(type_name, "order-17")  # no group exists yet: no NOGROUP
        assert st is not None and st.state is JobState.WAITING
        assert st.payload == {"to": "a@b.c"} and st.headers == {"traceparent": "00-4bf9-01"}
        assert st.max_attempts == 5 and st.entry_id is not None
        assert await p.cancel(type_name, "order-17") == JobState.WAITING  # no group either
        st = await p.status(type_name, "order-17")
        assert st is not None and st.state is JobState.CANCELLED
        assert await r.xlen(tk.stream) == 2500
        assert await p.status(type_name, "no-such-job") is None


async def test_an_entry_id_is_readable_before_any_group_exists(
    r: Redis, redis_url: str, type_name: str
) -> None:
    tk = TypeKeys("sj", type_name)
    entry = (await r.xadd(tk.stream, {"payload": "1"})).decode()
    async with Producer(redis_url) as p:
        st = await p.status(type_name, entry)
    assert st is not None and st.state is JobState.WAITING


async def test_enqueue_lua_called_as_documented_leaves_no_ghost(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """docs/protocol.md: the id as an argument, no id field; the job completes under it."""
    tk = TypeKeys("sj", type_name)
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> str:
        return job.id

    await ensure_group(r, tk)
    sha = await r.script_load(source("enqueue"))
    reply = await r.evalsha(sha, 4, tk.stream, tk.delayed, tk.stats, tk.job_prefix,
                            "node-1", "", 0, 0, 1, "payload", '{"n":1}')
    assert reply == [0, b"node-1", b"waiting"]
    async with Producer(redis_url) as p, running(Worker(redis_url, reg)):
        await wait_state(p, type_name, "node-1", JobState.COMPLETED)
        st = await p.status(type_name, "node-1")
        assert st is not None and st.result == "node-1"
    assert await r.xlen(tk.stream) == 0
    refused = [("bad id", 1), ("ok", 300)]
    for job_id, n in refused:
        with pytest.raises(Exception, match="nothing was enqueued"):
            await r.evalsha(sha, 4, tk.stream, tk.delayed, tk.stats, tk.job_prefix,
                            job_id, "", 0, 0, n, *(["payload", "1"] * n))


async def test_a_refused_ack_says_what_became_of_the_entry(
    r: Redis, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Reclaimed by another worker, or forgotten by the server (its delivery lost in a
    failover: here the consumer is deleted with its pending entries), not one story."""
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    s = Scripts(r)
    taken = await xadd_raw(r, tk, [b"payload", b"1"])
    forgotten = await xadd_raw(r, tk, [b"payload", b"2"])
    await r.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=2)
    await r.xclaim(tk.stream, GROUP, "other", 0, [taken])
    await r.xgroup_delconsumer(tk.stream, GROUP, "c")  # forgets `forgotten`'s delivery
    metrics = WorkerMetrics()
    settler = Settler(s, {type_name: tk}, {type_name: Policy()}, "c", 60_000, metrics)
    settler.open()
    settler.ok(type_name, taken, taken, b"", idle=True)
    settler.ok(type_name, forgotten, forgotten, b"", idle=True)
    with caplog.at_level(logging.WARNING, "streamjobs"):
        await settler.flush_all()
    assert metrics.jobs.labels(type_name, Outcome.ACK_REFUSED)._value.get() == 2
    [warning] = [m for m in caplog.messages if "refused" in m]
    assert "reclaimed by other" in warning
    assert "1 delivered to no one on the server" in warning
    assert await stat(r, tk, "completed") == 0
