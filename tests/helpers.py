"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

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


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await anyio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def spawn_worker(url: str, module: str, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """A worker in its own process, as `streamjobs worker` runs it."""
    full_env = {**os.environ, "STREAMJOBS_REDIS_URL": url, "PYTHONPATH": str(ROOT),
                **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "streamjobs", "worker", module, *args],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
