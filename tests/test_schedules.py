"""Cron and interval schedules (engine/schedules.py, lua/schedule_tick.lua) and pausing a
type (engine/pause.py): real server, worker subprocesses where the issue asks for them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import redis

from streamjobs import InvalidArgument, Job, Producer, Registry, Schedule, Settings, Worker
from streamjobs.api import create_app
from streamjobs.codes import Code
from streamjobs.collector import QueueCollector, sync_client
from streamjobs.counts import type_stats
from streamjobs.errors import ConfigError
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.schedules import tick_once, upsert
from streamjobs.scripts import Scripts
from tests.helpers import ROOT, running, spawn_worker, stat, wait_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


def ticks_of(runs: dict[bytes, bytes], name: str) -> dict[int, int]:
    """tick ms -> times its job ran, from the test handlers' runs hash."""
    prefix = f"cron:{name}:"
    return {int(k.decode()[len(prefix):]): int(v) for k, v in runs.items()
            if k.decode().startswith(prefix) and "now-" not in k.decode()}


# ---- next-run computation ------------------------------------------------------------


def test_ticks_of_cron_with_seconds_interval_and_time_zone() -> None:
    at = int(datetime(2026, 1, 1, 0, 0, 7, 250000, tzinfo=UTC).timestamp() * 1000)
    base = at - 7250
    assert Schedule("s", "t", cron="*/5 * * * * *").ticks(at) == (base + 5000, base + 10000)
    assert Schedule("s", "t", every=2).ticks(at) == (base + 6000, base + 8000)
    # 03:00 in Paris is 02:00 UTC in winter.
    daily = Schedule("s", "t", cron="0 3 * * *", tz="Europe/Paris")
    assert daily.ticks(at) == (base - 22 * 3600_000, base + 2 * 3600_000)
    on_tick = base + 5000  # a tick exactly now is the latest one, not the next
    assert Schedule("s", "t", cron="*/5 * * * * *").ticks(on_tick) == (on_tick, on_tick + 5000)


@pytest.mark.parametrize("bad", [
    dict(cron="* * *"), dict(cron="61 * * * *"), dict(), dict(cron="* * * * *", every=1),
    dict(every=0.5), dict(every=1, tz="Mars/Olympus"), dict(every=1, max_attempts=0),
])
def test_invalid_schedules_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        Schedule("s", "t", **bad).check()
    with pytest.raises(InvalidArgument):
        Schedule("bad name", "t", every=1).check()


def test_handler_declares_a_schedule() -> None:
    reg = Registry()
    reg.handler("report", cron="0 3 * * *", schedule_payload={"k": 1})(lambda job: None)
    s = reg.get("report").schedule
    assert s is not None and s.cron == "0 3 * * *" and s.payload == {"k": 1}
    with pytest.raises(ConfigError):
        reg.handler("other", cron="nonsense")(lambda job: None)


# ---- the tick script -------------------------------------------------------------------


async def test_racing_schedulers_enqueue_a_tick_once(redis_url: str, r: Redis,
                                                     type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        await p.schedule("race-" + type_name, type_name, {"n": 1}, every=3600)
        now = int((await r.time())[0]) * 1000
        await r.zadd(tk.schedule_due, {"race-" + type_name: now - 1000})
        scripts = [Scripts(r) for _ in range(8)]
        async with anyio.create_task_group() as tg:
            for s in scripts:
                tg.start_soon(tick_once, r, s, [tk])
        assert await stat(r, tk, "cron_ticks") == 1
        assert await r.xlen(tk.stream) == 1
        # The same expected next run again: another scheduler's stale read, refused.
        s = (await p.get_schedule("race-" + type_name))
        assert s is not None and s.next_run_ms is not None and s.next_run_ms > now
        code, _ = await Scripts(r).schedule_tick(tk, s.name, now - 1000, now - 1000,
                                                 now + 1000, ["payload", "1"])
        assert code is Code.ALREADY
        # Not due yet on the server clock.
        code, _ = await Scripts(r).schedule_tick(tk, s.name, s.next_run_ms, now,
                                                 now + 7200_000, ["payload", "1"])
        assert code is Code.WRONG_STATE


async def test_downtime_runs_the_latest_missed_tick_once(redis_url: str, r: Redis,
                                                         type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    name = "down-" + type_name
    async with Producer(redis_url) as p:
        await p.schedule(name, type_name, {}, every=1)
        sec, usec = await r.time()
        now = int(sec) * 1000 + int(usec) // 1000
        await r.zadd(tk.schedule_due, {name: now - now % 1000 - 30_000})  # 30 ticks missed
        await tick_once(r, Scripts(r), [tk])
        sec, usec = await r.time()
        after = int(sec) * 1000 + int(usec) // 1000
        entries = await r.xrange(tk.stream)
        assert len(entries) == 1
        job_id = entries[0][1][b"id"].decode()
        tick = int(job_id.rsplit(":", 1)[1])
        assert now - 1000 < tick <= after  # the latest missed tick, not the first
        s = await p.get_schedule(name)
        assert s is not None and s.last_run_ms == tick and s.next_run_ms == tick + 1000


# ---- three worker processes ------------------------------------------------------------


@pytest.mark.slow
async def test_three_workers_enqueue_each_tick_exactly_once(
    redis_url: str, r: Redis, type_name: str, procs: list[Any]
) -> None:
    cron_type = f"{type_name}-cron"
    tk = TypeKeys("sj", cron_type)
    runs_key = f"test:{{{type_name}}}:runs"
    env = {"SJ_TEST_TYPE": type_name, "SJ_EVERY": "1"}
    for _ in range(3):
        procs.append(spawn_worker(redis_url, "tests.workers", "--concurrency", "4", env=env))

    async def runs() -> dict[bytes, bytes]:
        return dict(await r.hgetall(runs_key))

    await wait_for(lambda: stat(r, tk, "cron_ticks"), timeout=30)
    t0 = time.monotonic()
    async with Producer(redis_url) as p:
        # Added at run time: picked up by the running workers.
        added = await p.schedule("api-" + type_name, cron_type, {}, cron="* * * * * *")
        assert added.next_run_ms is not None
        await wait_for(lambda: _has_tick(runs, added.name), timeout=5)
        await anyio.sleep(5 - (time.monotonic() - t0))
        procs[0].kill()  # the two others go on: no tick missed
        await anyio.sleep(10 - (time.monotonic() - t0))
        await p.pause_schedule(added.name)
        # A tick enqueued as the pause landed still runs: counted after it has.
        await anyio.sleep(1.5)
        await wait_for(lambda: _no_waiting(r, tk), timeout=5)
        paused_at = ticks_of(await runs(), added.name)
        await anyio.sleep(1.0)
        elapsed = time.monotonic() - t0
        # The schedule declared in code (named after its type) stops too, so that the
        # counts below hold still (a tick claimed before the pause lands within a second).
        await p.pause_schedule(cron_type)
        await anyio.sleep(1.2)
        await wait_for(lambda: _no_waiting(r, tk), timeout=5)
    # Ticks as enqueued (job records), and how many times each ran. The jobs the killed
    # worker held stay pending (until their visibility timeout): once the live workers
    # have finished theirs, each tick has run or is pending, and a job the killed worker
    # ran but did not ack is both (its run was recorded before the kill).
    records = [k.decode().rsplit(":", 1)[1]
               async for k in r.scan_iter(match=tk.job_prefix + f"cron:{cron_type}:*")]
    declared = {int(t) for t in records}

    async def pending_ticks() -> set[int]:
        rows = await r.xpending_range(tk.stream, GROUP, "-", "+", 100)
        ids = [row["message_id"] for row in rows]
        fields = [await r.xrange(tk.stream, i, i) for i in ids]
        return {int(f[0][1][b"id"].decode().rsplit(":", 1)[1]) for f in fields if f}

    async def accounted() -> bool:
        return set(ticks_of(await runs(), cron_type)) | await pending_ticks() == declared

    await wait_for(accounted, timeout=10)
    held = await pending_ticks()
    done = await runs()
    executed = ticks_of(done, cron_type)
    ticks = sorted(declared)
    # Exactly one job per tick, none doubled, none missed between the first and the last;
    # only the killed worker's jobs (at most its concurrency) not acked yet.
    assert set(executed) <= declared and set(executed.values()) == {1}
    assert set(executed) | held == declared and len(held) <= 4
    assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000))
    assert len(ticks) >= int(elapsed) - 1
    assert await stat(r, tk, "cron_ticks") == len(declared) + len(paused_at)
    # The paused schedule enqueued nothing more.
    assert ticks_of(done, added.name) == paused_at and set(paused_at.values()) == {1}
    lags = [int(await r.hget(tk.job(f"cron:{cron_type}:{t}"), "enqueued_at")) - t
            for t in ticks]
    assert max(lags) < 1000
    print(f"\ncron: {len(ticks)} ticks in {elapsed:.1f}s of run "
          f"({len(ticks) / elapsed:.2f}/s), max jobs per tick {max(executed.values())}, "
          f"enqueued {min(lags)}-{max(lags)} ms after the tick")


async def _has_tick(runs: Any, name: str) -> bool:
    return bool(ticks_of(await runs(), name))


async def _no_waiting(r: Redis, tk: TypeKeys) -> bool:
    return (await type_stats(r, tk)).waiting == 0


# ---- pause a type ---------------------------------------------------------------------


def _recording_worker(redis_url: str, type_name: str, started: list[str]) -> Worker:
    reg = Registry()

    @reg.handler(type_name)
    async def work(job: Job) -> None:
        started.append(job.id)

    return Worker(redis_url, reg, concurrency=4, block_ms=200)


async def test_pause_stops_new_starts_and_survives_a_restart(
    redis_url: str, r: Redis, type_name: str
) -> None:
    tk = TypeKeys("sj", type_name)
    started: list[str] = []
    async with Producer(redis_url) as p:
        async with running(_recording_worker(redis_url, type_name, started)):
            await p.enqueue(type_name, {"n": 0})
            await wait_for(lambda: len(started) == 1)
            assert await p.pause(type_name) is True
            assert await p.pause(type_name) is False
            await anyio.sleep(1.0)  # "within a second"
            ids = await p.enqueue_many(type_name, [{"n": i} for i in range(5)])
            await anyio.sleep(1.0)
            assert started == [started[0]]
            st = await type_stats(r, tk)
            assert st.paused and st.waiting == 5  # enqueues still land
        # A new worker: the pause is on the server.
        async with running(_recording_worker(redis_url, type_name, started)):
            await anyio.sleep(1.0)
            assert len(started) == 1
            assert await p.resume(type_name) is True
            await wait_for(lambda: sorted(started[1:]) == sorted(ids), timeout=5)
        assert not (await type_stats(r, tk)).paused


async def test_pause_hands_back_jobs_read_while_pausing(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """A read that blocked before the worker saw the pause: its jobs go back, unrun."""
    tk = TypeKeys("sj", type_name)
    started: list[str] = []
    worker = _recording_worker(redis_url, type_name, started)
    async with Producer(redis_url) as p, running(worker):
        await p.pause(type_name)
        worker._paused.add(type_name)  # as the watcher sees it, after the read began
        await p.enqueue_many(type_name, [{"n": i} for i in range(3)])
        await anyio.sleep(0.6)
        assert started == []
        await wait_for(lambda: stat(r, tk, "released"), timeout=3)
        await p.resume(type_name)
        await wait_for(lambda: len(started) == 3, timeout=5)


# ---- HTTP API, CLI, metrics ----------------------------------------------------------


async def test_http_schedules_and_pause(redis_url: str, r: Redis, type_name: str) -> None:
    app = create_app(redis_url, Settings(redis_url=redis_url))
    name = "h-" + type_name
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as c:
        res = await c.put(f"/schedules/{name}", json={"type": type_name, "every": 60,
                                                      "payload": {"a": 1}})
        assert res.status_code == 200, res.text
        assert res.json()["next_run_ms"] % 60_000 == 0
        assert (await c.put(f"/schedules/{name}", json={"type": type_name})).status_code == 422
        assert name in [s["name"] for s in (await c.get("/schedules")).json()["schedules"]]
        assert (await c.get(f"/schedules/{name}")).json()["payload"] == {"a": 1}
        paused = (await c.post(f"/schedules/{name}/pause")).json()
        assert paused["paused"] and paused["next_run_ms"] is None
        assert (await c.post(f"/schedules/{name}/resume")).json()["next_run_ms"] is not None
        ran = await c.post(f"/schedules/{name}/run-now")
        assert ran.status_code == 201 and ran.json()["id"].startswith(f"cron:{name}:now-")
        assert (await c.delete(f"/schedules/{name}")).status_code == 200
        assert (await c.get(f"/schedules/{name}")).status_code == 404
        assert (await c.post(f"/schedules/{name}/run-now")).status_code == 404

        res = await c.post(f"/types/{type_name}/pause")
        assert res.json() == {"type": type_name, "paused": True, "changed": True}
        row = next(t for t in (await c.get("/types")).json()["types"] if t["type"] == type_name)
        assert row["paused"] is True
        metrics = (await c.get("/metrics")).text
        assert f'streamjobs_type_paused{{type="{type_name}"}} 1.0' in metrics
        assert (await c.post(f"/types/{type_name}/resume")).json()["changed"] is True
        assert "/schedules/{name}/run-now" in (await c.get("/openapi.json")).json()["paths"]


def test_collector_counts_cron_ticks(redis_url: str, type_name: str) -> None:
    async def go() -> None:
        async with Producer(redis_url) as p:
            await p.enqueue(type_name, {})
    anyio.run(go)
    coll = QueueCollector(sync_client(redis_url))
    try:
        names = {m.name for m in coll.collect()}
    finally:
        coll.close()
    assert {"streamjobs_type_paused", "streamjobs_queue_cron_ticks"} <= names


async def test_schedule_names_are_unique_and_edits_keep_or_reset_the_next_run(
    redis_url: str, type_name: str
) -> None:
    name = "u-" + type_name
    async with Producer(redis_url) as p:
        first = await p.schedule(name, type_name, {}, every=3600)
        again = await p.schedule(name, type_name, {}, every=3600)  # a worker's restart
        assert again.next_run_ms == first.next_run_ms
        with pytest.raises(InvalidArgument, match="belongs to type"):
            await p.schedule(name, type_name + "-other", {}, every=60)
        paused = await p.pause_schedule(name)
        assert paused is not None and paused.paused and paused.next_run_ms is None
        assert await p.pause_schedule(name) == paused
        assert await p.get_schedule("missing-" + type_name) is None
        assert await p.pause_schedule("missing-" + type_name) is None
        assert await p.run_schedule_now("missing-" + type_name) is None
        # A worker's start upserts the declared schedule: an operator's pause stays.
        kept = await upsert(p.redis, "sj", Schedule(name, type_name, every=3600, payload={}),
                            declared=True)
        assert kept.paused and kept.next_run_ms is None
        assert await p.unschedule(name) is True
        assert await p.unschedule(name) is False


@pytest.mark.slow
def test_schedules_example_runs(redis_url: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url}
    res = subprocess.run([sys.executable, str(ROOT / "docs/examples/schedules.py")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert sum(line.startswith("ran cron:heartbeat_ping:") for line in lines) >= 2
    assert any(line.startswith("ran cron:ping_api:") for line in lines)
    assert "schedule nightly_report nightly_report 0 3 * * *" in " ".join(lines)
    r = redis.Redis.from_url(redis_url)
    try:
        for t in ("nightly_report", "heartbeat_ping"):
            r.delete(*(r.keys(f"sj:{{{t}}}:*") or ["-"]))
        r.srem("sj:types", "nightly_report", "heartbeat_ping")
    finally:
        r.close()
