"""The events streams, results awaited without polling (real server)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson
import pytest

from streamjobs import (
    ConfigError,
    DeadLetters,
    Event,
    Events,
    Job,
    JobCancelled,
    JobEvent,
    JobExpired,
    JobFailed,
    JobNotFound,
    PermanentError,
    Producer,
    Registry,
    ResultTimeout,
    Settings,
    SyncProducer,
    Worker,
)
from streamjobs.api import create_app
from streamjobs.api.server import server_config
from streamjobs.contract import EVENTS_MAXLEN, LOG_LINES
from streamjobs.embedded import free_port
from streamjobs.events import switch_events
from streamjobs.keys import TypeKeys
from streamjobs.schedules import tick_once
from streamjobs.scripts import Scripts
from tests.helpers import FAST, running, serving, stat, wait_for
from tests.test_cli import cli

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


async def events_of(r: Redis, type_name: str, job_id: str) -> list[JobEvent]:
    tk = TypeKeys("sj", type_name)
    rows = await r.xrange(tk.events)
    return [e for e in (JobEvent.parse(type_name, i, f) for i, f in rows) if e.id == job_id]


async def test_every_transition_in_order(redis_url: str, r: Redis, producer: Producer,
                                         type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name, max_attempts=3, immediate_retries=1, **FAST)
    async def h(job: Job) -> int:
        if job.attempt == 1:
            raise ValueError("first try fails")
        return job.attempt

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        assert await producer.result(type_name, job_id, timeout=10) == 2
    events = await events_of(r, type_name, job_id)
    assert [(e.event, e.attempt) for e in events] == [
        ("enqueued", 0), ("started", 1), ("failed", 1), ("retrying", 1), ("started", 2),
        ("completed", 2)]
    assert events[2].data["error"].startswith("ValueError: first try fails")
    assert events[1].data["consumer"]
    ats = [e.at for e in events]
    assert ats == sorted(ats) and ats[0] > 1_700_000_000_000


async def test_result_returns_within_ms_of_completion(redis_url: str, producer: Producer,
                                                      type_name: str) -> None:
    reg = Registry()
    finished: dict[str, float] = {}

    @reg.handler(type_name)
    async def h(job: Job) -> dict[str, int]:
        await anyio.sleep(0.3)
        finished[job.id] = time.perf_counter()
        return {"n": job.payload["n"] * 2}

    job_id = await producer.enqueue(type_name, {"n": 21})
    async with running(Worker(redis_url, reg)):
        assert await producer.result(type_name, job_id, timeout=10) == {"n": 42}
        returned = time.perf_counter()
    latency_ms = (returned - finished[job_id]) * 1000
    print(f"result() returned {latency_ms:.1f} ms after the handler returned")
    assert latency_ms < 200
    # A finished job: answered from its record at once.
    assert await producer.result(type_name, job_id, timeout=0.01) == {"n": 42}


async def test_dead_job_raises_its_error_and_timeout_raises(
        redis_url: str, r: Redis, producer: Producer, type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        if job.payload.get("slow"):
            await anyio.sleep(5)
        raise PermanentError("no such account")

    slow = await producer.enqueue(type_name, {"slow": True})
    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        with pytest.raises(JobFailed) as info:
            await producer.result(type_name, job_id, timeout=10)
        assert info.value.reason == "permanent" and "no such account" in (info.value.error or "")
        t0 = time.monotonic()
        with pytest.raises(ResultTimeout):
            await producer.result(type_name, slow, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
    dead = [e for e in await events_of(r, type_name, job_id) if e.event == Event.DEAD]
    assert dead and dead[0].data["reason"] == "permanent"


async def test_cancelled_raises(producer: Producer, type_name: str) -> None:
    job_id = await producer.enqueue(type_name, {}, delay=60)

    async def cancel_soon() -> None:
        await anyio.sleep(0.2)
        await producer.cancel(type_name, job_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        with pytest.raises(JobCancelled):
            await producer.result(type_name, job_id, timeout=5)


def test_sync_result(redis_url: str, type_name: str) -> None:
    with SyncProducer(redis_url) as p:
        job_id = p.enqueue(type_name, {})
        with pytest.raises(ResultTimeout):
            p.result(type_name, job_id, timeout=0.1)


async def test_watch_follows_several_types(redis_url: str, producer: Producer,
                                           type_name: str) -> None:
    other = type_name + "-b"
    got: list[JobEvent] = []
    async with Events(redis_url) as ev:
        two = anyio.Event()

        async def watch() -> None:
            async for e in ev.watch([type_name, other], block_ms=100):
                got.append(e)
                if len(got) == 2:
                    two.set()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.3)  # the watch starts from now: these come after
            a = await producer.enqueue(type_name, {})
            b = await producer.enqueue(other, {})
            with anyio.fail_after(5):
                await two.wait()
    assert {(e.type, e.id, e.event) for e in got} == {(type_name, a, "enqueued"),
                                                      (other, b, "enqueued")}


async def test_events_stream_is_capped(r: Redis, producer: Producer, type_name: str) -> None:
    await producer.enqueue_many(type_name, [{}] * (EVENTS_MAXLEN + 500))
    length = await r.xlen(TypeKeys("sj", type_name).events)
    assert EVENTS_MAXLEN <= length < EVENTS_MAXLEN + 500


async def test_api_long_poll_and_sse(redis_url: str, producer: Producer,
                                     type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> int:
        await anyio.sleep(0.2)
        return 7

    app = create_app(redis_url, Settings(redis_url=redis_url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(server_config(app, Settings(), "127.0.0.1", port, "warning")):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            job_id = await producer.enqueue(type_name, {})
            # Not finished within the wait: its state as it stands.
            t0 = time.monotonic()
            r = await client.get(f"/jobs/{type_name}/{job_id}", params={"wait": 0.3})
            assert r.status_code == 200 and r.json()["state"] == "waiting"
            assert time.monotonic() - t0 >= 0.25
            seen: list[tuple[str, dict[str, Any]]] = []
            async with running(Worker(redis_url, reg)):
                r = await client.get(f"/jobs/{type_name}/{job_id}", params={"wait": 10})
                assert r.json()["state"] == "completed" and r.json()["result"] == 7
                async with client.stream("GET", "/events",
                                         params={"types": type_name, "since": "0"}) as sse:
                    assert sse.headers["content-type"].startswith("text/event-stream")
                    name = ""
                    with anyio.fail_after(5):
                        async for line in sse.aiter_lines():
                            if line.startswith("event: "):
                                name = line[7:]
                            elif line.startswith("data: "):
                                seen.append((name, orjson.loads(line[6:])))
                                if name == "completed":
                                    break
    assert [n for n, _ in seen] == ["ready", "enqueued", "started", "completed"]
    assert seen[0][1] == {"types": [type_name]}  # first: the stream is followed from here
    assert all(d["id"] == job_id and d["type"] == type_name for _, d in seen[1:])
    assert seen[3][1]["attempt"] == 1


async def test_progress_logs_and_history(redis_url: str, r: Redis, producer: Producer,
                                         type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name, max_attempts=3, immediate_retries=1, **FAST)
    async def h(job: Job) -> str:
        job.log(f"attempt {job.attempt}\nstarts")
        if job.attempt == 1:
            raise ValueError("disk full")
        for i in range(1, 3):
            await job.progress(i / 4, f"resized {i} of 4")
        for i in range(150):
            job.log(f"line {i}")
        return "ok"

    @reg.handler(type_name + "-dead", max_attempts=2, immediate_retries=1, **FAST)
    async def dies(job: Job) -> None:
        raise RuntimeError(f"boom {job.attempt}")

    job_id = await producer.enqueue(type_name, {})
    dead_id = await producer.enqueue(type_name + "-dead", {})
    async with running(Worker(redis_url, reg)):
        assert await producer.result(type_name, job_id, timeout=10) == "ok"
        with pytest.raises(JobFailed):
            await producer.result(type_name + "-dead", dead_id, timeout=10)
    st = await producer.status(type_name, job_id)
    assert st is not None
    assert (st.progress, st.progress_message) == (0.5, "resized 2 of 4")
    assert len(st.logs) == LOG_LINES and st.logs[-1].endswith("#2 line 149")
    assert [(x["attempt"], x["outcome"], x.get("error", "")[:27]) for x in st.history] == [
        (1, "retrying", "ValueError: disk full"), (2, "completed", "")]
    assert all(x["duration_ms"] >= 0 and x["worker"] and x["started_at"] > 0
               for x in st.history)
    progress = [(e.event, e.data) for e in await events_of(r, type_name, job_id)
                if e.event == "progress"]
    assert progress == [("progress", {"progress": "0.25", "message": "resized 1 of 4"}),
                        ("progress", {"progress": "0.5", "message": "resized 2 of 4"})]
    app = create_app(redis_url, Settings(redis_url=redis_url))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api")
                as client):
        body = (await client.get(f"/jobs/{type_name}/{job_id}")).json()
    assert body["progress"] == 0.5 and body["logs"] == st.logs
    assert [x["outcome"] for x in body["history"]] == ["retrying", "completed"]
    dead = await producer.status(type_name + "-dead", dead_id)
    assert dead is not None
    assert [(x["outcome"], x["error"][:20]) for x in dead.history] == [
        ("retrying", "RuntimeError: boom 1"), ("dead", "RuntimeError: boom 2")]


async def test_unknown_job_answers_at_once(producer: Producer, type_name: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(JobNotFound):
        await producer.result(type_name, "no-such-job", timeout=5)
    assert time.monotonic() - t0 < 1


async def test_events_switched_off_per_type(redis_url: str, r: Redis, producer: Producer,
                                            type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    off = cli("events", type_name, "off", url=redis_url)
    assert off.returncode == 0 and off.stdout.strip() == "off"
    job_id = await producer.enqueue(type_name, {})
    await producer.cancel(type_name, job_id)
    assert await r.type(tk.events) == b"string"  # nothing was written
    with pytest.raises(ConfigError, match="switched off"):
        await producer.result(type_name, job_id, timeout=1)
    with pytest.raises(ConfigError):
        async for _ in Events(r).watch([type_name]):
            pass
    assert cli("events", type_name, "on", url=redis_url).stdout.strip() == "on"
    await producer.enqueue(type_name, {})
    assert await r.xlen(tk.events) == 1
    assert cli("events", type_name, "show", url=redis_url).stdout.strip() == "on"


async def test_api_refuses_a_type_whose_events_are_off_before_streaming(
        redis_url: str, r: Redis, producer: Producer, type_name: str) -> None:
    """A 409 with what to do, not a 200 stream that fails at once (an EventSource would
    reconnect forever); a long poll says the same."""
    await switch_events(r, TypeKeys("sj", type_name), on=False)
    job_id = await producer.enqueue(type_name, {})
    app = create_app(redis_url, Settings(redis_url=redis_url))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api")
                as client):
        res = await client.get("/events", params={"types": f"{type_name}-on,{type_name}"})
        assert res.status_code == 409 and res.headers["content-type"] == "application/json"
        body = res.json()
        assert body["type"] == type_name
        assert "switched off" in body["error"]
        assert f"streamjobs events {type_name} on" in body["error"]
        res = await client.get(f"/jobs/{type_name}/{job_id}", params={"wait": 1})
        assert res.status_code == 409 and res.json()["type"] == type_name


async def test_sse_says_ready_once_subscribed(redis_url: str, producer: Producer,
                                              type_name: str) -> None:
    """The first message, `ready`, comes once the stream's start is fixed: a job enqueued
    after it is always sent (no race between subscribing and enqueueing)."""
    app = create_app(redis_url, Settings(redis_url=redis_url))
    with serving(server_config(app, Settings(), "127.0.0.1", free_port(), "warning")) as url:
        async with (httpx.AsyncClient(base_url=url, timeout=10) as client,
                    client.stream("GET", "/events", params={"types": type_name}) as sse):
            assert sse.status_code == 200
            lines = sse.aiter_lines()
            with anyio.fail_after(5):
                head = [await anext(lines) for _ in range(3)]
            assert head[0] == "event: ready"
            assert orjson.loads(head[1].removeprefix("data: ")) == {"types": [type_name]}
            job_id = await producer.enqueue(type_name, {})
            with anyio.fail_after(5):
                async for line in lines:
                    if line.startswith("data: "):
                        assert orjson.loads(line[6:])["id"] == job_id
                        break


async def test_every_new_transition_has_its_event(redis_url: str, r: Redis,
                                                   producer: Producer, type_name: str) -> None:
    """Expiry (at start and at promote), a running job's cancel, a plain XADD
    deduplicated at its start, debounce, a cron tick and dead retry each write theirs;
    result() ends on expired and cancelled."""
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    started = anyio.Event()

    @reg.handler(type_name, **FAST)
    async def h(job: Job) -> None:
        if job.payload == "slow":
            started.set()
            await anyio.sleep(30)
        if job.payload == "dies":
            raise PermanentError("no")
        await anyio.sleep(0.3 if job.payload == "hold" else 0)

    at_start = await producer.enqueue(type_name, {}, expires_in=0.05)
    at_promote = await producer.enqueue(type_name, {}, delay=0.3, expires_in=0.05)
    debounced = await producer.enqueue(type_name, 1, dedup_key="deb", dedup_mode="debounce",
                                       delay=30)
    assert await producer.enqueue(type_name, 2, dedup_key="deb", dedup_mode="debounce",
                                  delay=60) == debounced
    await anyio.sleep(0.1)  # past at_start's expiry before any worker sees it
    async with running(Worker(redis_url, reg, concurrency=4)):
        with pytest.raises(JobExpired):
            await producer.result(type_name, at_start, timeout=10)
        with pytest.raises(JobExpired):
            await producer.result(type_name, at_promote, timeout=10)
        slow = await producer.enqueue(type_name, "slow")
        with anyio.fail_after(10):
            await started.wait()
        await producer.cancel(type_name, slow)
        with pytest.raises(JobCancelled, match="cancelled while running"):
            await producer.result(type_name, slow, timeout=10)
        for _ in range(2):
            await r.xadd(tk.stream, {"payload": '"hold"', "dedup_key": "plain"})
        await wait_for(lambda: _stat_is(r, tk, "deduplicated", 2))  # debounce + plain
        dies = await producer.enqueue(type_name, "dies")
        with pytest.raises(JobFailed):
            await producer.result(type_name, dies, timeout=10)
        await DeadLetters(r).retry(type_name, dies)
        await producer.schedule("tick-" + type_name, type_name, {}, every=3600)
        await r.zadd(tk.schedule_due, {"tick-" + type_name: 1})
        await tick_once(r, Scripts(r), [tk])
    rows = [JobEvent.parse(type_name, i, f) for i, f in await r.xrange(tk.events)]

    def of(job_id: str) -> list[str]:
        return [e.event for e in rows if e.id == job_id]

    assert of(at_start) == ["enqueued", "expired"]
    assert of(at_promote) == ["enqueued", "expired"]
    assert of(debounced) == ["enqueued", "debounced"]
    assert [e.data["due_at"] for e in rows if e.event == "debounced"] != []
    assert of(slow) == ["enqueued", "started", "cancelled"]
    cancelled = next(e for e in rows if e.id == slow and e.event == "cancelled")
    assert cancelled.attempt == 1 and cancelled.data["reason"] == "cancelled while running"
    dedup = [e for e in rows if e.event == "cancelled" and e.id != slow]
    assert len(dedup) == 1 and dedup[0].data["reason"].startswith("deduplicated: job ")
    assert of(dies)[:5] == ["enqueued", "started", "failed", "dead", "dead_retried"]
    ticks = {e.id for e in rows if e.id.startswith(f"cron:tick-{type_name}:")}
    assert ticks and all(of(t)[0] == "enqueued" for t in ticks)


async def _stat_is(r: Redis, tk: TypeKeys, name: str, want: int) -> bool:
    return await stat(r, tk, name) == want


async def test_a_partitioned_type_has_events_per_partition(
        redis_url: str, r: Redis, producer: Producer, type_name: str) -> None:
    """Each partition writes its own stream; watch() follows them all, result() and the
    long poll find the job's partition; the switch covers every partition, also one
    added later."""
    reg = Registry()

    @reg.handler(type_name, partitions=3)
    async def h(job: Job) -> int:
        await anyio.sleep(0.1)
        return int(job.payload)

    parts = TypeKeys("sj", type_name).partitions(3)
    async with running(Worker(redis_url, reg)):
        got: list[JobEvent] = []
        async with Events(redis_url) as ev:
            done = anyio.Event()

            async def watch() -> None:
                async for e in ev.watch([type_name], block_ms=100):
                    got.append(e)
                    if sum(x.event == "completed" for x in got) == 6:
                        done.set()
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await anyio.sleep(0.3)
                ids = [await producer.enqueue(type_name, n) for n in range(6)]
                for n, job_id in enumerate(ids):
                    assert await producer.result(type_name, job_id, timeout=10) == n
                with anyio.fail_after(10):
                    await done.wait()
    assert {e.partition for e in got} == {0, 1, 2}  # round-robin over the partitions
    for part in parts:
        assert await r.xlen(part.events) > 0
    for job_id in ids:
        assert [e.event for e in got if e.id == job_id] == ["enqueued", "started", "completed"]
    assert {e.tag for e in got} == {p.tag for p in parts}
    off = cli("events", type_name, "off", url=redis_url)
    assert off.stdout.strip() == "off"
    assert [await r.type(p.events) for p in parts] == [b"string"] * 3
    from streamjobs.streams import publish_partitions
    await publish_partitions(r, parts[0], 4)
    assert await r.type(TypeKeys("sj", type_name, 3).events) == b"string"
    assert cli("events", type_name, "on", url=redis_url).stdout.strip() == "on"
    assert [await r.type(p.events) for p in parts] == [b"none"] * 3
