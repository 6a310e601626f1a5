"""Failover is a pause, never a crash: a cluster primary killed (SIGKILL) under load,
on a cluster of its own (the shared fixture stays whole).

A producer enqueues without pause (durable to a replica while one exists: an enqueue
acknowledged before the kill is on the replica that takes over; after it, a job written
without a replica to confirm it comes back as NotDurable with its id, and counts as
acknowledged too), one worker runs every job. Checked: every acknowledged job runs, the
worker never exits, a job runs twice only if it was in flight at the kill; the stalls
are printed (pytest -s)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest
import redis.cluster

from streamjobs import Producer, Worker
from streamjobs.collector import sync_client
from streamjobs.config import Settings
from streamjobs.errors import NotDurable
from streamjobs.keys import TypeKeys
from streamjobs.registry import Registry
from tests import servers
from tests.helpers import running, wait_for
from tests.test_topologies import spread_types

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streamjobs.job import Job

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("failover")]

#: Load before the kill, and after it (the failover happens in there).
BEFORE_S, AFTER_S = 1.0, 7.0


async def _under_load(url: str, types: list[str], victim: str,
                      kill: Callable[[], None]) -> dict[str, float]:
    runs: dict[str, int] = {}
    started: list[tuple[float, str]] = []
    reg = Registry()

    async def work(job: Job) -> None:
        started.append((time.monotonic(), job.type))
        runs[job.id] = runs.get(job.id, 0) + 1
        await anyio.sleep(0.002)

    for t in types:
        reg.handler(t, visibility_timeout=2.0)(work)
    settings = Settings(redis_url=url, durability="replica", durability_timeout=0.3,
                        enqueue_deadline=30)
    acked: list[str] = []
    waits: list[tuple[float, float]] = []  # (sent, acknowledged) of each enqueue
    stop = anyio.Event()

    async def produce(p: Producer) -> None:
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                acked.append(await p.enqueue(types[i % len(types)], {"i": i}))
            except NotDurable as e:
                acked.extend(e.job_ids)
            waits.append((t0, time.monotonic()))
            i += 1
            await anyio.sleep(0.002)

    worker = Worker(url, reg, settings=settings, concurrency=8, block_ms=200)
    async with Producer(url, settings=settings) as p, running(worker), \
            anyio.create_task_group() as tg:
        tg.start_soon(produce, p)
        await anyio.sleep(BEFORE_S)
        in_flight = worker.capacity.used  # fetched, running or not yet settled
        t_kill = time.monotonic()
        kill()
        await anyio.sleep(AFTER_S)
        stop.set()
        await wait_for(lambda: all(j in runs for j in acked), timeout=30)
        await anyio.sleep(0.5)  # a late duplicate, if any, shows up here
        assert not worker._stopping  # the worker never stopped on its own
    after = [s for s, t in started if t == victim and s > t_kill]
    return {
        "acknowledged": len(acked),
        "lost": sum(1 for j in set(acked) if j not in runs),
        "duplicates": sum(n - 1 for n in runs.values()),
        "in_flight_at_kill": in_flight,
        "enqueue_stall_s": max(b - a for a, b in waits if b > t_kill),
        "run_stall_s": (after[0] - t_kill) if after else float("inf"),
    }


def _check(figures: dict[str, float], what: str) -> None:
    print(f"\n{what} failover: " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
    assert figures["acknowledged"] > 20  # under load (~300 on a quiet machine, ~70 busy)
    assert figures["lost"] == 0
    assert figures["duplicates"] <= figures["in_flight_at_kill"]
    assert figures["run_stall_s"] < AFTER_S  # the victim's jobs ran again before the end


async def test_cluster_primary_killed_under_load(tmp_path: Path) -> None:
    with servers.cluster(tmp_path, node_timeout_ms=1000) as c:
        types = spread_types(c.url, per_primary=1)
        r = sync_client(c.url)
        assert isinstance(r, redis.cluster.RedisCluster)
        try:
            port = r.get_node_from_key(TypeKeys("sj", types[0]).stream).port
        finally:
            r.close()
        victim = next(n for n in c.nodes if n.port == port)
        assert victim.proc is not None
        figures = await _under_load(c.url, types, types[0], victim.proc.kill)
        assert port not in c.primaries()  # its replica took over
    _check(figures, "cluster")


async def test_sentinel_primary_killed_under_load(tmp_path: Path) -> None:
    """Sentinel promotes the replica: the client follows through the sentinel."""
    with servers.sentinel(tmp_path) as s:
        assert s.primary.proc is not None
        types = ["failover_s0", "failover_s1"]
        figures = await _under_load(s.url, types, types[0], s.primary.proc.kill)
        promoted = servers.command(s.sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                   s.service)
        assert str(s.replica.port) in promoted  # the replica took over
    _check(figures, "sentinel")
