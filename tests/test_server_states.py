"""The worker against a server that is full, forgets its consumer group, restarts empty or
is flushed under load: it never exits, loses nothing the server kept, and resumes.

Each test runs its own private server (FLUSHALL and maxmemory would hit other tests)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.connection import client_from_url
from streamjobs.contract import JobState
from streamjobs.embedded import EmbeddedServer
from streamjobs.keys import GROUP, TypeKeys
from tests.helpers import pending, running, stat, wait_for, wait_state

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@contextmanager
def private_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path, port=0, appendonly=False).start()
    try:
        yield server
    finally:
        server.stop()


def counting(type_name: str, done: list[Any], sleep: float = 0.0) -> Registry:
    reg = Registry()

    @reg.handler(type_name, visibility_timeout=1.5, backoff_base=0.01, backoff_cap=0.05)
    async def h(job: Job) -> None:
        if sleep:
            await anyio.sleep(sleep)
        done.append(job.payload)

    return reg


async def test_a_full_server_stops_no_worker_and_loses_nothing(
    tmp_path: Path, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "streamjobs")
    done: list[Any] = []
    tk = TypeKeys("sj", type_name)
    with private_server(tmp_path) as server:
        r = client_from_url(server.url)
        async with Producer(server.url) as p:
            ids = [await p.enqueue(type_name, {"i": i}) for i in range(20)]
            await r.config_set("maxmemory", 1)  # noeviction: every write is refused
            with pytest.raises(Exception, match="OOM|maxmemory"):
                await r.set("probe", 1)
            # Two workers start on the full server (the group exists, the type is known).
            async with running(Worker(server.url, counting(type_name, done))), \
                    running(Worker(server.url, counting(type_name, []))):
                await wait_for(lambda: len(done) >= 1, timeout=10)
                await anyio.sleep(1.0)
                assert await stat(r, tk, "completed") == 0  # every ack was refused...
                assert await pending(r, tk) > 0  # ...and the entries stay pending
                await r.config_set("maxmemory", 0)
                for job_id in ids:
                    await wait_state(p, type_name, job_id, JobState.COMPLETED, timeout=20)
        assert await stat(r, tk, "completed") == 20 and await pending(r, tk) == 0
        await r.aclose()
    assert any("the server is full" in rec.getMessage() for rec in caplog.records)


async def test_a_lost_group_is_recreated_in_every_loop(
    tmp_path: Path, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The group vanishes again and again while jobs run, are touched, reclaimed, acked
    and promoted: no loop of the worker dies, and every job ends completed."""
    caplog.set_level(logging.ERROR, "streamjobs")
    done: list[Any] = []
    tk = TypeKeys("sj", type_name)
    with private_server(tmp_path) as server:
        r = client_from_url(server.url)
        async with Producer(server.url) as p, \
                running(Worker(server.url, counting(type_name, done, sleep=0.3), concurrency=4)):
            ids = [await p.enqueue(type_name, {"i": i}) for i in range(8)]
            ids.append(await p.enqueue(type_name, {"later": True}, delay=1.0))
            for _ in range(12):
                await anyio.sleep(0.25)
                await r.xgroup_destroy(tk.stream, GROUP)
            for job_id in ids:
                await wait_state(p, type_name, job_id, JobState.COMPLETED, timeout=20)
            after = await p.enqueue(type_name, {"after": True})
            await wait_state(p, type_name, after, JobState.COMPLETED)
        await r.aclose()
    assert {"after": True} in done and {"later": True} in done
    assert any("is gone from the server" in rec.getMessage() for rec in caplog.records)


async def test_a_server_restarted_empty_is_set_up_again(tmp_path: Path, type_name: str) -> None:
    """A job is running when the server comes back without its data: its ack meets NOGROUP,
    the worker recreates its group and goes on with new jobs."""
    done: list[Any] = []
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        if job.payload.get("slow"):
            await anyio.sleep(1.5)
        done.append(job.payload)

    with private_server(tmp_path) as server:
        async with running(Worker(server.url, reg)):
            async with Producer(server.url) as p:
                await p.enqueue(type_name, {"before": True})
                await wait_for(lambda: len(done) == 1)
                await p.enqueue(type_name, {"slow": True})
                await anyio.sleep(0.3)  # it runs now
            server.kill()  # no AOF: everything is gone
            await anyio.sleep(0.2)
            server.start()
            await wait_for(lambda: len(done) == 2)  # it finishes; its ack meets NOGROUP
            async with Producer(server.url) as p:
                job_id = await p.enqueue(type_name, {"after": True})
                await wait_state(p, type_name, job_id, JobState.COMPLETED, timeout=20)
    assert done == [{"before": True}, {"slow": True}, {"after": True}]


async def test_flushall_under_load(tmp_path: Path, type_name: str) -> None:
    done: list[Any] = []
    with private_server(tmp_path) as server:
        r = client_from_url(server.url)
        async with running(Worker(server.url, counting(type_name, done, 0.002),
                                  concurrency=8)), Producer(server.url) as p:
            async with anyio.create_task_group() as tg:
                async def produce() -> None:
                    for i in range(600):
                        await p.enqueue(type_name, {"i": i})
                tg.start_soon(produce)
                await wait_for(lambda: len(done) >= 50)
                await r.flushall()
            after = [await p.enqueue(type_name, {"after": i}) for i in range(30)]
            for job_id in after:
                await wait_state(p, type_name, job_id, JobState.COMPLETED, timeout=20)
        await r.aclose()
    assert sum(1 for d in done if "after" in d) == 30
