"""Durable enqueue (AOF fsync or a replica's acknowledgement) and enqueue through a server
that is away for a moment."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streamjobs import Producer
from streamjobs.config import Settings
from streamjobs.embedded import EmbeddedServer, free_port
from streamjobs.errors import ConfigError, InvalidArgument, NotDurable, ServerUnavailable
from streamjobs.failover import is_transient

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def test_aof_durability_on_a_server_with_aof(tmp_path: Path, type_name: str) -> None:
    with EmbeddedServer(tmp_path, port=0, appendonly=True) as server:
        async with Producer(server.url, settings=Settings(durability="aof")) as p:
            job = await p.enqueue(type_name, {"n": 1})
            assert await p.status(type_name, job) is not None
            ids = await p.enqueue_many(type_name, range(1200), durable=True)
            assert len(ids) == 1200
            with pytest.raises(NotDurable, match="acknowledged by a replica") as e:
                await p.enqueue(type_name, {"n": 2}, durable="replica")
            assert len(e.value.job_ids) == 1  # written, not confirmed


async def test_durability_refused_without_aof(redis_url: str, type_name: str) -> None:
    async with Producer(redis_url, settings=Settings(durability_timeout=0.2)) as p:
        with pytest.raises(NotDurable, match="AOF off") as e:
            await p.enqueue(type_name, {"n": 1}, durable=True)
        (job,) = e.value.job_ids
        assert await p.status(type_name, job) is not None
        assert await p.enqueue(type_name, {"n": 1}, durable=False)
        with pytest.raises(InvalidArgument):
            await p.enqueue(type_name, {"n": 1}, durable="disk")


def test_durability_setting_is_checked() -> None:
    assert Settings.from_env({"STREAMJOBS_DURABILITY": "replica"}).durability == "replica"
    with pytest.raises(ConfigError, match="durability"):
        Settings.from_env({"STREAMJOBS_DURABILITY": "always"})


def test_transient_errors() -> None:
    assert is_transient(RedisConnectionError("reset"))
    assert is_transient(ResponseError("CLUSTERDOWN The cluster is down"))
    assert is_transient(ResponseError("READONLY You can't write against a read only replica."))
    assert not is_transient(ResponseError("ERR wrong number of arguments"))
    assert not is_transient(AttributeError("ours"))  # raised outside redis-py


async def test_enqueue_waits_for_a_server_that_comes_back(tmp_path: Path, type_name: str
                                                          ) -> None:
    server = EmbeddedServer(tmp_path, port=free_port(), appendonly=False)

    async def start_later() -> None:
        await anyio.sleep(1.0)
        server.start()  # from this thread: the server dies with the thread that started it

    try:
        async with anyio.create_task_group() as tg, Producer(
                server.url, settings=Settings(enqueue_deadline=20)) as p:
            tg.start_soon(start_later)
            t0 = time.monotonic()
            job = await p.enqueue(type_name, {"n": 1})
            assert time.monotonic() - t0 >= 0.9
            assert await p.status(type_name, job) is not None
    finally:
        server.stop()


async def test_enqueue_gives_up_at_the_deadline(type_name: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with Producer(url, settings=Settings(enqueue_deadline=0.5)) as p:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable, match="cannot be reached") as e:
            await p.enqueue(type_name, {"n": 1})
        assert 0.5 <= time.monotonic() - t0 < 5
        assert isinstance(e.value.__cause__, RedisConnectionError)
