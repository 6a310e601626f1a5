"""Shared test helpers."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import anyio
import uvicorn
from anyio.abc import SocketAttribute

from streamjobs.keys import GROUP

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from anyio.abc import SocketStream
    from redis.asyncio import Redis

    from streamjobs import JobState, Producer
    from streamjobs.keys import TypeKeys
    from streamjobs.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in the background for the block, then stop it gracefully."""
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


#: A retry policy that backs off in milliseconds, for tests that retry.
FAST = dict(backoff_base=0.01, backoff_cap=0.05, visibility_timeout=5)


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``check`` (sync or async) until it is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        await anyio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def wait_equal(read: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 10.0
                     ) -> None:
    """Poll ``read()`` until it returns ``expected``; the failure shows the last value."""
    last: list[Any] = []

    async def check() -> bool:
        last[:] = [await read()]
        return bool(last[0] == expected)

    try:
        await wait_for(check, timeout)
    except AssertionError:
        raise AssertionError(f"expected {expected!r} within {timeout}s, last read {last}") from None


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """The blocking form of :func:`wait_for`, for tests that drive subprocesses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def stat(r: Redis, tk: TypeKeys, name: str) -> int:
    """One counter of a type's stats hash (0 when never counted)."""
    return int(await r.hget(tk.stats, name) or 0)


async def pending(r: Redis, tk: TypeKeys, consumer: str | None = None) -> int:
    """Entries in the group's pending list (of one consumer, when given)."""
    if consumer is None:
        return int((await r.xpending(tk.stream, GROUP))["pending"])
    rows = await r.xpending_range(tk.stream, GROUP, "-", "+", 100_000, consumername=consumer)
    return len(rows)


async def job_state(p: Producer, type_name: str, job_id: str) -> JobState | None:
    st = await p.status(type_name, job_id)
    return st.state if st else None


async def wait_state(p: Producer, type_name: str, job_id: str, want: JobState,
                     timeout: float = 10) -> None:
    await wait_equal(lambda: job_state(p, type_name, job_id), want, timeout)


def spawn_worker(url: str, module: str, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """A worker in its own process, as `streamjobs worker` runs it."""
    full_env = {**os.environ, "STREAMJOBS_REDIS_URL": url, "PYTHONPATH": str(ROOT),
                **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "streamjobs", "worker", module, *args],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@contextmanager
def example_run(redis_url: str, example: str, *types: str
                ) -> Iterator[subprocess.CompletedProcess[str]]:
    """``docs/examples/<example>`` run as a user runs it (no STREAMJOBS_* setting but the
    server's URL); the keys of its ``types`` are removed afterwards."""
    import redis

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url}
    r = redis.Redis.from_url(redis_url)
    try:
        yield subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / example)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        for t in types:
            r.delete(*(r.keys(f"sj:{{{t}}}:*") or ["-"]))
        r.srem("sj:types", *types)
        r.close()


@contextmanager
def serving(config: uvicorn.Config) -> Iterator[str]:
    """Serve with uvicorn in a thread (one event loop, as in production); yields its URL."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


class ReplyDroppingProxy:
    """A TCP proxy to the server that can lose one reply: once armed with a marker, it
    forwards the next request holding it, then closes that client connection without
    forwarding the answer (the request landed; the client never hears so), as a
    connection reset at the wrong moment does."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.armed: bytes | None = None
        self.dropped = 0
        self.url = ""

    def arm(self, marker: bytes) -> None:
        self.armed = marker

    async def handle(self, client: SocketStream) -> None:
        muted = False
        async with client, await anyio.connect_tcp(*self.upstream) as upstream, \
                anyio.create_task_group() as tg:

            async def requests() -> None:
                nonlocal muted
                async for chunk in client:
                    if self.armed is not None and self.armed in chunk:
                        self.armed, muted = None, True
                        await upstream.send(chunk)
                        await anyio.sleep(0.2)  # the server runs it; its reply goes nowhere
                        self.dropped += 1
                        tg.cancel_scope.cancel()
                        return
                    await upstream.send(chunk)

            async def replies() -> None:
                async for chunk in upstream:
                    if not muted:
                        await client.send(chunk)

            tg.start_soon(requests)
            tg.start_soon(replies)


@asynccontextmanager
async def reply_dropping_proxy(redis_url: str) -> AsyncIterator[ReplyDroppingProxy]:
    u = urlparse(redis_url)
    proxy = ReplyDroppingProxy(u.hostname or "127.0.0.1", u.port or 6379)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    proxy.url = f"redis://127.0.0.1:{port}{u.path or '/0'}"

    async def serve_one(stream: SocketStream) -> None:
        try:
            await proxy.handle(stream)
        except* (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # either side hung up

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
