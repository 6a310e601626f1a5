"""saq driver (asyncio, redis-py, JSON jobs). Run with bench/.venvs/saq/bin/python."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_async_driver  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from saq import Worker  # noqa: E402
from saq.queue.redis import RedisQueue  # noqa: E402

GATHER = 500


class SaqPeer(Peer):
    name = "saq"
    version = version("saq")
    bulk_note = f"no bulk enqueue API: asyncio.gather of enqueue in chunks of {GATHER}"

    def __init__(self, args):
        super().__init__(args)
        self.config = (f"Worker(concurrency={self.concurrency}), max_concurrent_ops=100, "
                       "retries=2 + retry_delay=0 for fail_once, uvloop")
        self.retries = 2 if args.workload == "drain_fail_once" else 1

    async def setup(self):
        logging.getLogger("saq").setLevel(logging.WARNING)
        # redis-py's pool defaults to 100 connections; each saq slot blocks on one
        client = aioredis.from_url(self.args.url, max_connections=self.concurrency + 50)
        self.queue = RedisQueue(client, max_concurrent_ops=100)
        await self.queue.connect()

    async def close(self):
        await self.queue.disconnect()

    async def enqueue(self, payload):
        await self.queue.enqueue("job", retries=self.retries, retry_delay=0.0, **payload)

    async def enqueue_many(self, payloads):
        for k in range(0, len(payloads), GATHER):
            await asyncio.gather(*(self.enqueue(p) for p in payloads[k:k + GATHER]))

    async def worker(self):
        h = self.handler

        async def job(ctx, **payload):
            await h.arun(payload)

        self.w = Worker(self.queue, functions=[("job", job)], concurrency=self.concurrency)
        await self.w.start()

    async def stop_worker(self, task):
        await self.w.stop()
        task.cancel()


if __name__ == "__main__":
    run_async_driver(SaqPeer)
