"""The engine on a cluster, behind Sentinel and over TLS (fixtures in conftest.py and
servers.py). On the cluster, the test types are chosen so that they spread over all
three primaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import redis
import redis.cluster
from redis.exceptions import ResponseError

from streamjobs import Events, Job, Producer, Worker
from streamjobs.api import create_app
from streamjobs.collector import QueueCollector, sync_client
from streamjobs.config import Settings
from streamjobs.connection import client_from_url, is_cluster, parse_target
from streamjobs.contract import JobState
from streamjobs.counts import checked, known_types, types_stats
from streamjobs.dead import DeadLetters
from streamjobs.errors import ConfigError, NotDurable, PermanentError
from streamjobs.keys import TypeKeys, types_key
from streamjobs.logs import redact
from streamjobs.registry import Registry
from streamjobs.streams import rescan_types
from tests import servers
from tests.helpers import ROOT, pending, poll, running, wait_equal, wait_for, wait_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from streamjobs.job import Job

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("topologies")]


def spread_types(url: str, per_primary: int = 2) -> list[str]:
    """Fresh type names, ``per_primary`` of them on each primary of the cluster."""
    r = sync_client(url)
    assert isinstance(r, redis.cluster.RedisCluster)
    try:
        chosen: dict[str, list[str]] = {n.name: [] for n in r.get_primaries()}
        assert len(chosen) == 3
        while any(len(v) < per_primary for v in chosen.values()):
            name = f"c{uuid.uuid4().hex[:10]}"
            node = r.get_node_from_key(TypeKeys("sj", name).stream)
            if len(chosen[node.name]) < per_primary:
                chosen[node.name].append(name)
        return [t for v in chosen.values() for t in v]
    finally:
        r.close()


# ---- one way to say where the server is ------------------------------------------------


def test_url_forms() -> None:
    assert parse_target("redis://h:1/2").kind == "server"
    assert parse_target("rediss://h:1").tls
    assert parse_target("unix:///tmp/s.sock?db=1").kind == "server"
    c = parse_target("redis+cluster://:pw@a:1,b:2")
    assert (c.kind, c.nodes, c.options["password"]) == ("cluster", (("a", 1), ("b", 2)), "pw")
    s = parse_target("rediss+sentinel://s1:26379,s2:26380/mymaster?db=3&sentinel_password=sp"
                     "&ssl_ca_certs=/ca.pem")
    assert (s.kind, s.service, s.tls, s.options["db"]) == ("sentinel", "mymaster", True, 3)
    assert s.sentinel_options == {"password": "sp"} and s.options["ssl_ca_certs"] == "/ca.pem"
    for bad in ("http://h:1", "redis+cluster://", "redis+sentinel://h:1",
                "redis+cluster://h:1/3", "redis+cluster://h", "redis://h:1?sslca=x"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_redact_hides_every_password() -> None:
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis+cluster://:secret@a:1,b:2") == "redis+cluster://:***@a:1,b:2"
    assert redact("redis+sentinel://s:1/m?password=p1&sentinel_password=p2&db=1") == (
        "redis+sentinel://s:1/m?password=***&sentinel_password=***&db=1")
    with pytest.raises(ConfigError) as e:
        parse_target("redis://u:secret@h:1?nope=1")
    assert "secret" not in str(e.value)


def test_a_failed_read_is_an_error_never_a_zero() -> None:
    assert checked(ResponseError("NOGROUP No such key 'x' or consumer group")) is None
    assert checked(ResponseError("ERR no such key")) is None
    for err in (redis.ConnectionError("down"), ResponseError("CLUSTERDOWN The cluster is down"),
                ResponseError("MOVED 12 127.0.0.1:7001")):
        with pytest.raises(type(err)):
            checked(err)


async def test_a_types_path_touches_only_its_own_keys(r: Redis, redis_url: str,
                                                      type_name: str) -> None:
    """A user allowed only the keys ``sj:{T}:*`` enqueues, reads, cancels and lists
    dead letters of T: nothing in the type's path needs another key (the index of known
    types is best effort)."""
    user, secret = f"u{type_name}", uuid.uuid4().hex
    await r.acl_setuser(user, enabled=True, passwords=[f"+{secret}"],
                        keys=[f"sj:{{{type_name}}}:*"], commands=["+@all"])
    host = redis_url.split("://")[1]
    url = f"redis://{user}:{secret}@{host}"
    try:
        async with Producer(url, settings=Settings(redis_url=url, enqueue_deadline=0)) as p:
            job = await p.enqueue(type_name, {"n": 1}, job_id="a")
            assert len(await p.enqueue_many(type_name, [1, 2])) == 2
            assert (await p.status(type_name, job)).state is JobState.WAITING  # type: ignore[union-attr]
            later = await p.enqueue(type_name, 1, delay=30)
            assert await p.cancel(type_name, later) == "delayed"
            assert await DeadLetters(p.redis, settings=p.settings).count(type_name) == 0
        assert type_name not in await known_types(r, "sj")  # the index refused the user
    finally:
        await r.acl_deluser(user)


# ---- cluster -----------------------------------------------------------------------------


@pytest.fixture
async def cr(cluster: str) -> AsyncIterator[Redis]:
    client = client_from_url(cluster)
    assert is_cluster(client)
    yield client
    await client.aclose()


async def _fail(job: Job) -> None:
    raise PermanentError("no")


async def test_cluster_enqueue_status_cancel_dlq_stats_on_every_primary(
        cluster: str, cr: Redis) -> None:
    types = spread_types(cluster)
    settings = Settings(redis_url=cluster)
    async with Producer(cluster, settings=settings) as p:
        for t in types:
            first = await p.enqueue(t, {"n": 1}, job_id=f"{t}-1")
            assert (await p.status(t, first)).state is JobState.WAITING  # type: ignore[union-attr]
            ids = await p.enqueue_many(t, [{"n": i} for i in range(1200)])
            assert len(ids) == 1200 and len(set(ids)) == 1200
            later = await p.enqueue(t, {"n": 2}, delay=60)
            assert await p.cancel(t, later) == "delayed"
        stats = await types_stats(cr, [TypeKeys("sj", t) for t in types])
        assert [(s.waiting, s.enqueued) for s in stats] == [(1201, 1202)] * len(types)
        assert set(types) <= set(await known_types(cr, "sj"))
        # A worker per type drains it, dead letters included.
        dl = DeadLetters(cr, settings=settings)
        for t in types[:3]:
            reg = Registry()
            reg.handler(t, max_attempts=1)(_fail)
            async with running(Worker(cr, reg, settings=settings, concurrency=8,
                                      block_ms=100)):
                await wait_equal(lambda t=t: dl.count(t), 1201, timeout=60)
            assert await dl.retry_all(t) == 1201
            async with running(Worker(cr, reg, settings=settings, concurrency=8,
                                      block_ms=100)):
                await wait_equal(lambda t=t: dl.count(t), 1201, timeout=60)
            assert await dl.purge(t) == 1201


async def test_cluster_dedup_expiry_and_cancel_of_a_running_job(
        cluster: str, cr: Redis) -> None:
    """Dedup keys, the expired index and the cancels set live in each type's slot: on
    every primary, a unique key answers, an expired job never runs, a running job is
    cancelled by its worker."""
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    started: dict[str, anyio.Event] = {t: anyio.Event() for t in types}
    reg = Registry()
    for t in types:
        async def work(job: Job, t: str = t) -> None:
            if job.payload == "stale":
                raise AssertionError("an expired job ran")
            if job.payload == "run":
                started[t].set()
                await anyio.sleep(30)
        reg.handler(t)(work)
    async with Producer(cr, settings=settings) as p:
        stale = {t: await p.enqueue(t, "stale", expires_in=0.05) for t in types}
        await anyio.sleep(0.1)
        async with AsyncExitStack() as stack:
            for t in types:  # one worker per type on a cluster
                await stack.enter_async_context(running(Worker(
                    cr, reg, types=[t], settings=settings, block_ms=100)))
            for t in types:
                job_id = await p.enqueue(t, "run", dedup_key="one")
                assert (await p.enqueue(t, "again", dedup_key="one")).deduplicated
                await started[t].wait()
                answer = await p.cancel(t, job_id)
                assert answer == JobState.RUNNING, t
                assert answer.outcome.value == "cancelled", t
                await wait_state(p, t, stale[t], JobState.EXPIRED)
                assert not (await p.enqueue(t, "new", dedup_key="one")).deduplicated


async def test_rescan_finds_types_on_every_primary(cluster: str, cr: Redis) -> None:
    types = spread_types(cluster, per_primary=1)
    async with Producer(cr, settings=Settings(redis_url=cluster)) as p:
        for t in types:
            await p.enqueue(t, {"n": 1})
    await cr.srem(types_key("sj"), *types)
    assert not set(types) & set(await known_types(cr, "sj"))
    assert set(types) <= set(await rescan_types(cr, "sj"))
    assert set(types) <= set(await known_types(cr, "sj"))


async def test_cluster_worker_drains_each_type(cluster: str, cr: Redis) -> None:
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    async with Producer(cr, settings=settings) as p:
        for t in types:
            await p.enqueue_many(t, [{"n": i} for i in range(50)])
        for t in types:
            reg = Registry()
            reg.handler(t)(_echo)
            async with running(Worker(cluster, reg, settings=settings, block_ms=100)):
                last = await p.enqueue(t, {"n": "last"})
                await wait_state(p, t, last, JobState.COMPLETED, timeout=30)
            (s,) = await types_stats(cr, [TypeKeys("sj", t)])
            assert (s.completed, s.waiting, s.running) == (51, 0, 0)


async def _echo(job: Job) -> Any:
    return job.payload


async def test_cluster_one_worker_serves_types_and_partitions_on_every_primary(
        cluster: str, cr: Redis) -> None:
    """One worker, fewer slots than streams: 21 types on 3 primaries and a type of 4
    partitions (each in its own slot), all drained (tests/test_fetch.py holds the count
    of pending entries, read atomically on one server)."""
    types = spread_types(cluster, per_primary=7)
    hot = f"h{uuid.uuid4().hex[:10]}"
    reg = Registry()
    for t in types:
        reg.handler(t)(_echo)
    reg.handler(hot, partitions=4)(_echo)
    settings = Settings(redis_url=cluster)
    worker = Worker(cluster, reg, settings=settings, concurrency=3, block_ms=200)
    tks = [worker.keys[name] for name in worker._live]  # no job of a priority level
    assert len({cr.keyslot(tk.stream) for tk in tks}) >= 20  # 25 streams; names may share a slot
    async with Producer(cr, settings=settings) as p, running(worker):
        last = {}
        for t in [*types, hot]:
            *_, last[t] = await p.enqueue_many(t, [{"n": i} for i in range(30)])
        for t in [*types, hot]:
            await wait_state(p, t, last[t], JobState.COMPLETED, timeout=30)
    stats = await types_stats(cr, [TypeKeys("sj", t) for t in types])
    assert [(s.completed, s.waiting) for s in stats] == [(30, 0)] * len(types)
    (h,) = await types_stats(cr, [TypeKeys("sj", hot)])
    assert (h.completed, h.waiting) == (30, 0)
    assert not any([await pending(cr, tk, worker.name) for tk in tks])


async def test_cluster_api_types_workers_metrics(cluster: str) -> None:
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    app = create_app(cluster, settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://api") as client:
        for i, t in enumerate(types):
            r = await client.post(f"/jobs/{t}/bulk", json={"jobs": [{"payload": i}] * (i + 1)})
            assert r.status_code == 201, r.text
            jid = r.json()["jobs"][0]["id"]
            assert (await client.get(f"/jobs/{t}/{jid}")).json()["state"] == "waiting"
        assert (await client.get("/ready")).status_code == 200
        listed = {row["type"]: row for row in (await client.get("/types")).json()["types"]}
        assert [listed[t]["waiting"] for t in types] == [1, 2, 3]
        for i, t in enumerate(types):
            page = (await client.get(f"/jobs/{t}", params={"state": "waiting"})).json()
            assert len(page["jobs"]) == i + 1
            assert (await client.get(f"/dead/{t}")).json()["jobs"] == []
        reg = Registry()
        reg.handler(types[0])(_echo)
        async with running(Worker(cluster, reg, settings=settings, block_ms=100,
                                  name="w-cluster")):
            await wait_equal(lambda: _worker_names(client), ["w-cluster"])
            await wait_equal(lambda: _waiting(client, types[0]), 0, timeout=20)
        text = (await client.get("/metrics")).text
        assert "streamjobs_scrape_error 0.0" in text
        for i, t in enumerate(types[1:], start=1):
            assert f'streamjobs_queue_waiting{{type="{t}"}} {i + 1}.0' in text


async def _worker_names(client: httpx.AsyncClient) -> list[str]:
    return [w["name"] for w in (await client.get("/workers")).json()["workers"]]


async def _waiting(client: httpx.AsyncClient, t: str) -> int:
    rows = (await client.get("/types")).json()["types"]
    return next(int(r["waiting"]) for r in rows if r["type"] == t)


def test_cluster_node_that_cannot_be_read_is_a_scrape_error(cluster: str) -> None:
    types = spread_types(cluster, per_primary=1)
    c = sync_client(cluster, timeout=0.5)
    assert isinstance(c, redis.cluster.RedisCluster)
    c.sadd(types_key("sj"), *types)
    collector = QueueCollector(c)
    try:
        node = c.get_node_from_key(TypeKeys("sj", types[0]).stream)
        ok = {m.name: m for m in collector.collect()}
        assert ok["streamjobs_scrape_error"].samples[0].value == 0.0
        c.execute_command("CLIENT", "PAUSE", "8000", "ALL", target_nodes=node)
        try:
            failed = {m.name: m for m in collector.collect()}
        finally:
            c.execute_command("CLIENT", "UNPAUSE", target_nodes=node)
        assert failed["streamjobs_scrape_error"].samples[0].value == 1.0
        assert "streamjobs_queue_waiting" not in failed
    finally:
        collector.close()


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
async def test_collector_from_an_async_client(topology: str, request: pytest.FixtureRequest,
                                              type_name: str) -> None:
    fixture = request.getfixturevalue(topology)
    url = fixture if isinstance(fixture, str) else fixture.url
    client = client_from_url(url)
    try:
        async with Producer(client, settings=Settings(redis_url=url)) as p:
            await p.enqueue_many(type_name, [1, 2, 3])
        collector = QueueCollector(sync_client(client))
        try:
            families = {m.name: m for m in collector.collect()}
        finally:
            collector.close()
        waiting = families["streamjobs_queue_waiting"].samples
        assert any(s.labels == {"type": type_name} and s.value == 3 for s in waiting)
    finally:
        await client.aclose()


async def test_cluster_durable_enqueue(cluster: str) -> None:
    types = spread_types(cluster, per_primary=1)
    async with Producer(cluster, settings=Settings(redis_url=cluster,
                                                   durability="replica")) as p:
        for t in types:
            assert await p.enqueue(t, {"n": 1})
            assert len(await p.enqueue_many(t, [1, 2, 3])) == 3
        with pytest.raises(NotDurable, match="AOF off") as e:
            await p.enqueue(types[0], {"n": 2}, durable="aof")
        assert len(e.value.job_ids) == 1
        assert (await p.status(types[0], e.value.job_ids[0])) is not None


def test_cli_up_and_stats_on_a_cluster(cluster: str, procs: list[subprocess.Popen[bytes]]
                                       ) -> None:
    (t, *_) = spread_types(cluster, per_primary=1)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "SJ_TEST_TYPE": t, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "streamjobs", "--url", cluster]
    procs.append(subprocess.Popen([*base, "up", "tests.workers", "--no-api"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    out = subprocess.run([*base, "enqueue", t, '{"n": 1}'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    job_id = out.stdout.strip()

    def completed() -> bool:
        res = subprocess.run([*base, "status", t, job_id], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        return '"completed"' in res.stdout

    poll(completed, 60, 0.5)
    stats = subprocess.run([*base, "stats"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60, check=True)
    assert any(line.split()[0] == t and line.split()[6] == "1"
               for line in stats.stdout.splitlines()[1:])


# ---- sentinel ------------------------------------------------------------------------------


async def test_sentinel_enqueue_and_drain(sentinel: servers.Sentinel, type_name: str) -> None:
    settings = Settings(redis_url=sentinel.url)
    reg = Registry()
    reg.handler(type_name)(_echo)
    async with Producer(sentinel.url, settings=settings) as p:
        ids = await p.enqueue_many(type_name, list(range(20)))
        assert await p.enqueue(type_name, {"n": 1}, durable="replica")
        async with running(Worker(sentinel.url, reg, settings=settings, block_ms=100)):
            await wait_state(p, type_name, ids[-1], JobState.COMPLETED, timeout=30)
    metrics = QueueCollector(sync_client(sentinel.url))
    try:
        families = {m.name: m for m in metrics.collect()}
        assert families["streamjobs_scrape_error"].samples[0].value == 0.0
        done = families["streamjobs_queue_completed"].samples
        assert any(s.labels == {"type": type_name} and s.value == 21 for s in done)
    finally:
        metrics.close()


# ---- TLS -------------------------------------------------------------------------------------


def _tls_url(tls: tuple[servers.Certs, int], cert: str, key: str) -> str:
    certs, port = tls
    return (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}&ssl_certfile={cert}"
            f"&ssl_keyfile={key}")


async def test_tls_with_client_certificate(tls: tuple[servers.Certs, int], type_name: str
                                           ) -> None:
    certs, _ = tls
    url = _tls_url(tls, str(certs.client_cert), str(certs.client_key))
    async with Producer(url, settings=Settings(redis_url=url)) as p:
        job = await p.enqueue(type_name, {"n": 1})
        assert (await p.status(type_name, job)).state is JobState.WAITING  # type: ignore[union-attr]
    c = sync_client(url)
    assert c.xlen(TypeKeys("sj", type_name).stream) == 1
    c.close()


@pytest.mark.parametrize("which", ["none", "rogue"])
async def test_tls_without_a_valid_client_certificate_is_refused(
        tls: tuple[servers.Certs, int], type_name: str, which: str) -> None:
    certs, port = tls
    url = (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}" if which == "none" else
           _tls_url(tls, str(certs.rogue_cert), str(certs.rogue_key)))
    async with Producer(url, settings=Settings(redis_url=url, enqueue_deadline=0)) as p:
        with pytest.raises(Exception) as e:
            with anyio.fail_after(20):
                await p.enqueue(type_name, {"n": 1})
    assert "cannot be reached" in str(e.value)


async def test_cluster_events_and_results_on_every_primary(cluster: str, cr: Redis) -> None:
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    seen: list[tuple[str, str, str]] = []
    async with Producer(cr, settings=settings) as p, Events(cr, settings=settings) as ev:
        done = anyio.Event()

        async def watch() -> None:
            async for e in ev.watch(types, block_ms=100):
                seen.append((e.type, e.id, e.event))
                if sum(1 for s in seen if s[2] == "completed") == len(types):
                    done.set()
                    return

        async with anyio.create_task_group() as tg, AsyncExitStack() as workers:
            tg.start_soon(watch)
            await anyio.sleep(0.5)  # the watch reads from now on
            for t in types:
                reg = Registry()
                reg.handler(t)(_echo)
                await workers.enter_async_context(
                    running(Worker(cluster, reg, settings=settings, block_ms=100)))
            ids = {t: await p.enqueue(t, {"n": t}) for t in types}
            for t in types:
                t0 = time.perf_counter()
                assert await p.result(t, ids[t], timeout=10) == {"n": t}
                print(f"cluster result() of {t}: {(time.perf_counter() - t0) * 1000:.1f} ms")
            with anyio.fail_after(10):
                await done.wait()
    for t in types:
        assert [s[2] for s in seen if s[:2] == (t, ids[t])] == [
            "enqueued", "started", "completed"]


async def test_cluster_schedules_tick_once_on_every_primary_and_pause(
        cluster: str, cr: Redis) -> None:
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    ran: dict[str, list[str]] = {t: [] for t in types}
    async with Producer(cr, settings=settings) as p, anyio.create_task_group() as tg:
        workers = []
        for t in types:
            reg = Registry()

            async def record(job: Job, t: str = t) -> None:
                ran[t].append(job.id)

            reg.handler(t)(record)
            await p.schedule(f"s-{t}", t, {}, every=1)
            for _ in range(2):  # two schedulers race for each tick
                w = Worker(cr, reg, settings=settings, block_ms=100)
                workers.append(w)
                await tg.start(w.run)
        assert {s.name for s in await p.schedules()} >= {f"s-{t}" for t in types}
        await anyio.sleep(3.5)
        await p.pause(types[0])
        for w in workers:
            w.stop()
    for t in types:
        ticks = sorted(int(i.rsplit(":", 1)[1]) for i in ran[t])
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks)
        assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000))
    paused = {s.type: s.paused for s in await types_stats(cr, [TypeKeys("sj", t) for t in types])}
    assert paused == {types[0]: True, types[1]: False, types[2]: False}


async def test_cluster_priorities_on_every_primary(cluster: str, cr: Redis) -> None:
    """Each type's levels live in its slot: high before low, a retried high job goes
    back to its level (ahead of the low ones left), stats count every level."""
    types = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    order: dict[str, list[str]] = {t: [] for t in types}
    reg = Registry()

    async def record(job: Job) -> None:
        order[job.type].append(job.payload)
        if job.payload == "retry" and job.attempt == 1:
            raise RuntimeError("once")
        if job.payload == "low":
            await anyio.sleep(0.05)

    for t in types:
        reg.handler(t, max_attempts=2, backoff_base=0.01, immediate_retries=0)(record)
    async with Producer(cr, settings=settings) as p:
        for t in types:
            for i in range(10):
                await p.enqueue(t, "low", priority="low")
                if i < 5:
                    await p.enqueue(t, "high", priority="high")
            await p.enqueue(t, "retry", priority="high")
        (s,) = await types_stats(cr, [TypeKeys("sj", types[0])])
        assert s.waiting_by_priority == {"high": 6, "low": 10}
        async with running(Worker(cluster, reg, settings=settings, concurrency=1,
                                  block_ms=100)):
            for t in types:
                await wait_for(lambda t=t: _count(order[t], 17), timeout=30)
    for t in types:
        assert order[t][:6] == ["high"] * 5 + ["retry"], order[t]
        assert order[t].index("retry", 6) < 16, order[t]  # back before the lows ended


async def _count(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_cluster_dependencies_and_groups_across_slots(cluster: str, cr: Redis) -> None:
    """A diamond and a group whose members live on every primary: each child is told by
    its parents' slots (the relay), runs once, with their results."""
    from streamjobs import Step, group

    a, b, c = spread_types(cluster, per_primary=1)
    settings = Settings(redis_url=cluster)
    seen: list[tuple[str, Any]] = []
    reg = Registry()

    async def work(job: Job) -> Any:
        seen.append((job.payload, job.parent_results))
        return job.payload

    for t in (a, b, c):
        reg.handler(t)(work)
    async with Producer(cr, settings=settings) as p:
        ids = await p.workflow([
            Step(a, "A", name="A"), Step(b, "B", name="B", after=["A"]),
            Step(c, "C", name="C", after=["A"]), Step(a, "D", name="D", after=["B", "C"])])
        gids = await p.workflow(group([Step((a, b, c)[i % 3], f"m{i}") for i in range(12)],
                                      then=Step(b, "then")))
        async with running(Worker(cluster, reg, settings=settings, concurrency=4,
                                  block_ms=100)):
            await wait_state(p, a, ids["D"], JobState.COMPLETED, timeout=30)
            await wait_state(p, b, gids["then"], JobState.COMPLETED, timeout=30)
    payloads = [s[0] for s in seen]
    assert payloads.count("D") == 1 and payloads.count("then") == 1
    d = next(s[1] for s in seen if s[0] == "D")
    assert d == {f"{b}/{ids['B']}": "B", f"{c}/{ids['C']}": "C"}
    then = next(s[1] for s in seen if s[0] == "then")
    assert sorted(then.values()) == sorted(f"m{i}" for i in range(12))
