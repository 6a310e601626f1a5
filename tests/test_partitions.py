"""Hot types spread over shards: a type declared with ``partitions=N`` keeps its jobs in
N hash tags (``T``, ``T#1`` … ``T#N-1``), producers spread them (round-robin, or one
partition per ``key``), workers read them all, and every view shows the type as one."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import redis.cluster

from streamjobs import Producer, Worker
from streamjobs.api import create_app
from streamjobs.collector import sync_client
from streamjobs.config import Settings
from streamjobs.contract import TYPE_NAME, JobState
from streamjobs.counts import types_stats
from streamjobs.dead import DeadLetters
from streamjobs.errors import ConfigError, DuplicateJob, InvalidTypeName, PermanentError
from streamjobs.keys import TypeKeys, partition_of_key, partition_tag, split_tag
from streamjobs.registry import Registry
from streamjobs.streams import partitions_of, publish_partitions, rescan_types
from tests.helpers import running, wait_equal

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.job import Job

pytestmark = pytest.mark.anyio

N = 3


async def _echo(job: Job) -> Any:
    return job.payload


async def _fail(job: Job) -> None:
    raise PermanentError("no")


def _registry(t: str, fn: Any = _echo, **policy: Any) -> Registry:
    reg = Registry()
    reg.handler(t, partitions=N, **policy)(fn)
    return reg


async def _lengths(r: Redis, t: str) -> list[int]:
    return [int(await r.xlen(tk.stream)) for tk in TypeKeys("sj", t).partitions(N)]


# ---- names ---------------------------------------------------------------------------


def test_partition_tags_never_collide_with_a_type_name() -> None:
    assert [TypeKeys("sj", "T").partitions(3)[k].stream for k in range(3)] == [
        "sj:{T}:stream", "sj:{T#1}:stream", "sj:{T#2}:stream"]
    assert not TYPE_NAME.fullmatch("T#1")  # no type is named like a partition
    with pytest.raises(InvalidTypeName):
        TypeKeys("sj", "T#1")
    assert split_tag(partition_tag("a.b-c", 7)) == ("a.b-c", 7)
    assert [split_tag(t) for t in ("T", "T#0", "T#01", "T#x")] == [
        ("T", 0), ("T#0", 0), ("T#01", 0), ("T#x", 0)]
    # Every producer, in any language, maps a key to one partition: zlib's CRC-32 mod N.
    assert [partition_of_key(k, 3) for k in ("a", "b", "user-42")] == [0, 2, 1]  # 0xe8b7be43 % 3 ...
    assert partition_of_key("a", 2**31) == 0xe8b7be43 % 2**31
    assert partition_of_key("anything", 1) == 0
    assert TypeKeys("sj", "T", 2).config == "sj:{T}:config"


def test_partitions_are_declared_sanely(type_name: str) -> None:
    reg = Registry()
    for bad in (0, 1025, "2"):
        with pytest.raises(ConfigError, match="partitions"):
            reg.handler(type_name, partitions=bad)  # type: ignore[arg-type]
    reg.handler(type_name, partitions=2)(_echo)
    assert reg.get(type_name).partitions == 2
    w = Worker("redis://127.0.0.1:1", reg, types=[f"{type_name}#1"])
    # each partition served at every priority level (engine/keys.py, TypeKeys.name)
    assert list(w.keys) == [f"{type_name}#1!high", f"{type_name}#1", f"{type_name}#1!low"]
    assert {tk.tag for tk in Worker("redis://127.0.0.1:1", reg,
                                    types=[f"{type_name}#0"]).keys.values()} == {type_name}
    for wrong in (f"{type_name}#2", f"{type_name}#x"):
        with pytest.raises(ConfigError):
            Worker("redis://127.0.0.1:1", reg, types=[wrong])


# ---- one server ----------------------------------------------------------------------


async def test_round_robin_spread_one_worker_drains_all(r: Redis, redis_url: str,
                                                        type_name: str) -> None:
    settings = Settings(redis_url=redis_url)
    reg = _registry(type_name)
    async with running(Worker(r, reg, settings=settings, block_ms=50)) as w:
        assert sorted({tk.tag for tk in w.keys.values()}) == sorted(
            partition_tag(type_name, k) for k in range(N))
        assert await partitions_of(r, TypeKeys("sj", type_name)) == N  # published
        async with Producer(r, settings=settings) as p:
            ids = await p.enqueue_many(type_name, [{"n": i} for i in range(300)])
            ids += [await p.enqueue(type_name, {"n": i}) for i in range(3)]
            assert len(set(ids)) == 303

            async def completed() -> int:
                (s,) = await types_stats(r, [TypeKeys("sj", type_name)])
                return s.completed

            await wait_equal(completed, 303, timeout=30)
            st = await p.status(type_name, ids[-1])
            assert st is not None and st.type == type_name and st.result == {"n": 2}
    # Round-robin: every partition got its third (the stream keeps nothing once acked,
    # so count the records' partitions).
    per = [0] * N
    for jid in ids:
        for k, tk in enumerate(TypeKeys("sj", type_name).partitions(N)):
            if await r.exists(tk.job(jid)):
                per[k] += 1
    assert per == [101, 101, 101]
    (s,) = await types_stats(r, [TypeKeys("sj", type_name)])
    assert (s.type, s.enqueued, s.completed, s.waiting, s.running) == (
        type_name, 303, 303, 0, 0)
    assert type_name in await rescan_types(r, "sj")


async def test_a_key_keeps_its_jobs_in_one_partition_in_order(r: Redis, redis_url: str,
                                                              type_name: str) -> None:
    settings = Settings(redis_url=redis_url)
    await publish_partitions(r, TypeKeys("sj", type_name), N)
    async with Producer(r, settings=settings) as p:
        for i in range(20):
            await p.enqueue(type_name, {"i": i}, key="user-42")
        await p.enqueue_many(type_name, [{"i": i} for i in range(20, 30)], key="user-42")
        await p.enqueue_many(type_name, [{"x": i} for i in range(30)])  # round-robin
    home = TypeKeys("sj", type_name, partition_of_key("user-42", N))
    rows = await r.xrange(home.stream)
    import orjson
    keyed = [orjson.loads(f[b"payload"])["i"] for _, f in rows if b'"i"' in f[b"payload"]]
    assert keyed == list(range(30))
    assert sum(await _lengths(r, type_name)) == 60
    assert all(n >= 10 for n in await _lengths(r, type_name))


async def test_status_cancel_dead_letters_show_the_type_as_one(
        r: Redis, redis_url: str, type_name: str) -> None:
    settings = Settings(redis_url=redis_url)
    await publish_partitions(r, TypeKeys("sj", type_name), N)
    async with Producer(r, settings=settings) as p:
        later = [await p.enqueue(type_name, {"n": i}, delay=60) for i in range(N)]
        named = [await p.enqueue(type_name, {"n": i}, job_id=f"job-{i}") for i in range(N)]
        for jid in later:
            st = await p.status(type_name, jid)
            assert st is not None and st.state is JobState.DELAYED and st.type == type_name
        assert [await p.cancel(type_name, jid) for jid in later] == ["delayed"] * N
        assert [(await p.status(type_name, j)).state for j in later] == [  # type: ignore[union-attr]
            JobState.CANCELLED] * N
        assert await p.status(type_name, "no-such-job") is None
        # Dead letters from every partition, listed as one, paged.
        async with running(Worker(r, _registry(type_name, _fail, max_attempts=1),
                                  settings=settings, block_ms=50)):
            dl = DeadLetters(r, settings=settings)
            await wait_equal(lambda: dl.count(type_name), N, timeout=20)
        seen, cursor = [], None
        while True:
            page, cursor = await dl.list(type_name, after=cursor, count=2)
            seen += page
            if cursor is None:
                break
        assert sorted(j.id for j in seen) == sorted(named)
        order = [tuple(int(x) for x in j.dead_entry.split("-")) for j in seen]
        assert order == sorted(order)
        shown = await dl.show(type_name, named[2])
        assert shown is not None and shown.state is JobState.DEAD and shown.error
        (s,) = await types_stats(r, [TypeKeys("sj", type_name)])
        assert (s.dead, s.enqueued) == (N, 2 * N)
        await dl.retry(type_name, named[1])
        assert await dl.count(type_name) == N - 1
        await dl.purge_one(type_name, named[2])
        assert await dl.retry_all(type_name) == 1
        assert await dl.count(type_name) == 0
        async with running(Worker(r, _registry(type_name, _fail, max_attempts=1),
                                  settings=settings, block_ms=50)):
            await wait_equal(lambda: dl.count(type_name), 2, timeout=20)
        assert await dl.purge(type_name) == 2


async def test_api_and_metrics_show_the_type_as_one(r: Redis, redis_url: str,
                                                    type_name: str) -> None:
    settings = Settings(redis_url=redis_url)
    await publish_partitions(r, TypeKeys("sj", type_name), N)
    app = create_app(redis_url, settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as client:
        res = await client.post(f"/jobs/{type_name}/bulk",
                                json={"jobs": [{"payload": i} for i in range(7)]})
        assert res.status_code == 201, res.text
        ids = [j["id"] for j in res.json()["jobs"]]
        assert all(n >= 2 for n in await _lengths(r, type_name))
        for jid in ids:
            got = (await client.get(f"/jobs/{type_name}/{jid}")).json()
            assert (got["state"], got["type"]) == ("waiting", type_name)
        listed = {row["type"]: row for row in (await client.get("/types")).json()["types"]}
        assert listed[type_name]["waiting"] == 7
        assert not any("#" in t for t in listed)
        pages, cursor = [], None
        while True:
            params = {"state": "waiting", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"/jobs/{type_name}", params=params)).json()
            pages += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(pages) == sorted(ids) and len(pages) == 7
        text = (await client.get("/metrics")).text
        assert f'streamjobs_queue_waiting{{type="{type_name}"}} 7.0' in text
        assert f'{type_name}#' not in text
        assert (await client.delete(f"/jobs/{type_name}/{ids[5]}")).json()[
            "previous_state"] == "waiting"
        assert (await client.get(f"/dead/{type_name}")).json()["jobs"] == []
        res = await client.post(f"/jobs/{type_name}/bulk", json={"jobs": [
            {"payload": i, "key": "k"} for i in range(4)]})
        assert res.status_code == 201, res.text
        home = TypeKeys("sj", type_name, partition_of_key("k", N))
        assert [f[b"payload"] for _, f in await r.xrange(home.stream)][-4:] == [
            b"0", b"1", b"2", b"3"]


# ---- cluster -------------------------------------------------------------------------


def _spread_type(url: str) -> str:
    """A fresh type whose N partitions are on N different primaries."""
    r = sync_client(url)
    assert isinstance(r, redis.cluster.RedisCluster)
    try:
        while True:
            t = f"p{uuid.uuid4().hex[:10]}"
            nodes = {r.get_node_from_key(tk.stream).name
                     for tk in TypeKeys("sj", t).partitions(N)}
            if len(nodes) == N:
                return t
    finally:
        r.close()


@pytest.mark.xdist_group("topologies")
async def test_cluster_partitions_on_every_primary(cluster: str) -> None:
    t = _spread_type(cluster)
    settings = Settings(redis_url=cluster)
    reg = _registry(t)
    async with Producer(cluster, settings=settings) as p:
        await publish_partitions(p.redis, TypeKeys("sj", t), N)
        ids = await p.enqueue_many(t, [{"n": i} for i in range(300)])
        assert await _lengths(p.redis, t) == [100, 100, 100]
        st = await p.status(t, ids[1])
        assert st is not None and st.state is JobState.WAITING
        # One worker serves every partition, each on its own primary (a reader per slot).
        async with running(Worker(cluster, reg, settings=settings, block_ms=50)):

            async def completed() -> int:
                (s,) = await types_stats(p.redis, [TypeKeys("sj", t)])
                return s.completed

            await wait_equal(completed, 300, timeout=60)
        (s,) = await types_stats(p.redis, [TypeKeys("sj", t)])
        assert (s.type, s.enqueued, s.waiting) == (t, 300, 0)
        done = await p.status(t, ids[2])
        assert done is not None and done.state is JobState.COMPLETED


# ---- CLI -----------------------------------------------------------------------------


async def test_cli_partitions_stats_and_delete(r: Redis, redis_url: str, type_name: str
                                              ) -> None:
    from tests.test_cli import cli

    res = cli("types", "partitions", type_name, url=redis_url)
    assert (res.returncode, res.stdout.strip()) == (0, f"{type_name}: 1 partitions")
    res = cli("types", "partitions", type_name, "3", url=redis_url)
    assert res.stdout.strip() == f"{type_name}: 3 partitions (was 1)", res.stderr
    async with Producer(r, settings=Settings(redis_url=redis_url)) as p:
        await p.enqueue_many(type_name, list(range(9)))
    assert await _lengths(r, type_name) == [3, 3, 3]
    res = cli("stats", url=redis_url)
    rows = [line.split() for line in res.stdout.splitlines() if type_name in line]
    assert rows == [[type_name, "9", "0", "0", "0", "0", "0", "0", "0", "False"]], res.stdout
    res = cli("types", "partitions", type_name, "2", url=redis_url)
    assert "was 3" in res.stdout and f"--types {type_name}#k" in res.stderr
    res = cli("types", "delete", type_name, "--yes", url=redis_url)
    assert res.returncode == 0 and "deleted type" in res.stdout, res.stderr
    assert await r.exists(TypeKeys("sj", type_name, 1).stream) == 0  # partition 1 went
    assert await r.exists(TypeKeys("sj", type_name, 2).stream) == 1  # 2: beyond the count


async def test_a_plain_xadd_to_a_partition_is_found_and_served(
        r: Redis, redis_url: str, type_name: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(redis_url=redis_url)
    tk = TypeKeys("sj", type_name)
    await publish_partitions(r, tk, 5)
    part = TypeKeys("sj", type_name, 2)
    a = (await r.xadd(part.stream, {"payload": "1"})).decode()
    await r.xadd(part.stream, {"payload": "2", "id": "mine"})
    async with Producer(r, settings=settings) as p:
        st = await p.status(type_name, a)
        assert st is not None and (st.state, st.type) == (JobState.WAITING, type_name)
        assert await p.cancel(type_name, "mine") == "waiting"
        # The handler now declares 3: the worker says what it leaves behind in 3 and 4.
        async with running(Worker(r, _registry(type_name), settings=settings, block_ms=50)):
            await wait_equal(lambda: _state(p, type_name, a), JobState.COMPLETED)
        assert "had 5 partitions and now has 3" in caplog.text
        assert await partitions_of(r, tk) == N


async def _state(p: Producer, t: str, job_id: str) -> JobState | None:
    st = await p.status(t, job_id)
    return st.state if st else None


async def test_dedup_ids_pause_and_schedules_span_the_partitions(
        r: Redis, redis_url: str, type_name: str) -> None:
    """Flow control and schedules treat a partitioned type as one: a dedup_key and a
    repeated id land in one partition (so they are found), pausing the type pauses every
    partition, and a schedule ticks into partition 0."""
    settings = Settings(redis_url=redis_url)
    await publish_partitions(r, TypeKeys("sj", type_name), N)
    async with Producer(r, settings=settings) as p:
        first = await p.enqueue(type_name, {"n": 0}, dedup_key="acct-9")
        again = [await p.enqueue(type_name, {"n": i}, dedup_key="acct-9") for i in range(5)]
        assert all(a == first and a.deduplicated for a in again)
        await p.enqueue(type_name, {}, job_id="order-1")
        for _ in range(4):  # round-robin would have tried other partitions
            with pytest.raises(DuplicateJob):
                await p.enqueue(type_name, {}, job_id="order-1")
        assert sum(await _lengths(r, type_name)) == 2
        assert await p.pause(type_name)
        await p.enqueue_many(type_name, [{"x": i} for i in range(2 * N)])  # every partition
        reg = _registry(type_name)
        async with running(Worker(r, reg, settings=settings, block_ms=50)):
            await anyio.sleep(1.0)  # several pause refreshes and fetches
            (s,) = await types_stats(r, [TypeKeys("sj", type_name)])
            assert (s.paused, s.completed, s.waiting) == (True, 0, 2 * N + 2)
            assert await p.resume(type_name)

            async def completed() -> int:
                (s,) = await types_stats(r, [TypeKeys("sj", type_name)])
                return s.completed

            await wait_equal(completed, 2 * N + 2, timeout=15)


async def test_dashboard_shows_a_partitioned_type_as_one(r: Redis, redis_url: str,
                                                         type_name: str) -> None:
    """Workers publish the type's name (not its partitions' tags), its detail and
    throughput add up every partition."""
    settings = Settings(redis_url=redis_url)
    app = create_app(redis_url, settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as client:
        reg = _registry(type_name)
        async with running(Worker(r, reg, settings=settings, block_ms=50)):
            res = await client.post(f"/jobs/{type_name}/bulk",
                                    json={"jobs": [{"payload": i} for i in range(9)]})
            assert res.status_code == 201, res.text

            async def completed() -> int:
                got = (await client.get(f"/types/{type_name}")).json()
                return int(got["stats"]["completed"])

            await wait_equal(completed, 9, timeout=15)
            detail = (await client.get(f"/types/{type_name}")).json()
            assert detail["workers"] == 1 and detail["policy"] is not None
            workers = (await client.get("/workers")).json()["workers"]
            assert [w["types"] for w in workers if type_name in w["types"]] == [[type_name]]
        tp = (await client.get("/throughput?minutes=5")).json()
        (mine,) = [s for s in tp["types"] if s["type"] == type_name]
        assert sum(mine["completed"]) == pytest.approx(9)
