"""Connections that stop answering: timeouts, keepalive, a half-open TCP connection."""

from __future__ import annotations

import socket
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import anyio
import pytest
from anyio.abc import SocketAttribute

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.connection import client_from_url
from streamjobs.errors import InvalidArgument
from streamjobs.keys import TypeKeys
from tests.helpers import running, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import SocketStream
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


async def test_client_sets_timeouts_keepalive_and_health_checks(redis_url: str) -> None:
    client = client_from_url(redis_url)
    kw = client.connection_pool.connection_kwargs
    assert 0 < kw["socket_timeout"] <= 10
    assert kw["socket_keepalive"] is True
    expected = {getattr(socket, name) for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL",
                                                   "TCP_KEEPCNT") if hasattr(socket, name)}
    assert expected <= set(kw["socket_keepalive_options"])
    assert kw["health_check_interval"] > 0
    await client.aclose()


async def test_unix_socket_client_takes_no_tcp_options(tmp_path: Any) -> None:
    client = client_from_url(f"unix://{tmp_path}/none.sock")
    kw = client.connection_pool.connection_kwargs
    assert "socket_keepalive" not in kw and kw["socket_timeout"] > 0
    await client.aclose()


def test_worker_socket_timeout_outlasts_its_block(redis_url: str, type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> None: ...

    w = Worker(redis_url, reg, block_ms=8000)
    timeout = w.redis.connection_pool.connection_kwargs["socket_timeout"]
    assert timeout >= 8 + 1
    with pytest.raises(InvalidArgument, match="socket_timeout"):
        Worker(client_from_url(redis_url, socket_timeout=1.0), reg, block_ms=1000)


async def test_long_block_does_not_trip_the_socket_timeout(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """A BLOCK longer than the default read timeout (5 s) keeps its connection: a read
    that timed out would have been retried on a fresh one."""
    reg = Registry()
    done: list[str] = []

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        done.append(job.id)

    async with running(Worker(redis_url, reg, block_ms=6000)), Producer(redis_url) as p:
        await anyio.sleep(7)  # more than one full idle BLOCK
        readers = [c for c in await r.client_list() if c["cmd"] == "xreadgroup"]
        assert readers and max(int(c["age"]) for c in readers) >= 6, readers
        job_id = await p.enqueue(type_name, {})
        await wait_for(lambda: done == [job_id], 5)


class HalfOpenProxy:
    """A TCP proxy that can stop forwarding on its open connections without closing them
    (what a dropped NAT entry or a black-holed route looks like); new connections forward."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.generation = 0
        self.port = 0

    def black_hole(self) -> None:
        self.generation += 1

    async def handle(self, client: SocketStream) -> None:
        gen = self.generation
        async with client, await anyio.connect_tcp(*self.upstream) as upstream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, upstream, gen)
                tg.start_soon(self._pump, upstream, client, gen)

    async def _pump(self, src: SocketStream, dst: SocketStream, gen: int) -> None:
        try:
            async for chunk in src:
                if gen != self.generation:
                    await anyio.sleep_forever()  # open, silent: neither closed nor forwarded
                await dst.send(chunk)
            await dst.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


@asynccontextmanager
async def half_open_proxy(redis_url: str) -> AsyncIterator[HalfOpenProxy]:
    u = urlparse(redis_url)
    proxy = HalfOpenProxy(u.hostname or "127.0.0.1", u.port or 6379)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        proxy.port = listener.extra(SocketAttribute.local_port)
        tg.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


async def test_worker_resumes_after_its_connections_go_half_open(
    redis_url: str, r: Redis, type_name: str
) -> None:
    """Resumes within the socket timeout. Entries the server handed to the read whose
    reply was lost are this consumer's pending entries: reclaimed after the visibility
    timeout, like a crashed worker's."""
    reg = Registry()
    vt = 3.0

    @reg.handler(type_name, visibility_timeout=vt)
    async def h(job: Job) -> None: ...

    tk = TypeKeys("sj", type_name)

    async def completed(n: int) -> bool:
        return int(await r.hget(tk.stats, "completed") or 0) >= n

    async with half_open_proxy(redis_url) as proxy, Producer(redis_url) as p:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with running(Worker(url, reg, concurrency=4)):
            await p.enqueue(type_name, {})
            await wait_for(lambda: completed(1))
            await anyio.sleep(0.3)  # the fetcher is blocked in XREADGROUP again
            proxy.black_hole()
            t0 = time.monotonic()
            late: list[str] = []
            with anyio.move_on_after(20):
                while not await completed(2):  # a new job every 0.2 s until one is done
                    late.append(await p.enqueue(type_name, {}))
                    await anyio.sleep(0.2)
            resumed = time.monotonic() - t0
            await wait_for(lambda: completed(1 + len(late)), vt * 2 + 5)
            everything = time.monotonic() - t0
    print(f"\nhalf-open: first new job done after {resumed:.2f}s, all {len(late)} "
          f"after {everything:.2f}s")
    assert resumed < 8


def test_commands_pack_through_hiredis_as_redis_py_packs_them() -> None:
    import pytest as _pytest
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from streamjobs.connection import _HiredisPacker, client_from_url

    client = client_from_url("redis://127.0.0.1:1/0")
    conn = client.connection_pool.make_connection()
    assert isinstance(conn._command_packer, _HiredisPacker)
    plain = Connection()
    for args in [("EVALSHA", "ab", 3, b"k\x00", "é", 0.1, -5, 2**70, 1e300),
                 ("SCRIPT LOAD", "return 1"), ("SET", memoryview(b"k"), bytearray(b"v"))]:
        assert b"".join(conn.pack_command(*args)) == b"".join(plain.pack_command(*args))
    with _pytest.raises(DataError):
        conn.pack_command("SET", "k", True)
    latin = client_from_url("redis://127.0.0.1:1/0", encoding="latin-1")
    assert not isinstance(latin.connection_pool.make_connection()._command_packer,
                          _HiredisPacker)
