"""arq driver (asyncio, redis-py < 6). Run with bench/.venvs/arq/bin/python."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_async_driver  # noqa: E402
from arq import create_pool  # noqa: E402
from arq.connections import RedisSettings  # noqa: E402
from arq.worker import Retry, Worker, func  # noqa: E402

GATHER = 500


class ArqPeer(Peer):
    name = "arq"
    version = version("arq")
    bulk_note = f"no bulk API: asyncio.gather of enqueue_job in chunks of {GATHER}"

    def __init__(self, args):
        super().__init__(args)
        self.settings = RedisSettings.from_dsn(args.url)
        self.config = (f"max_jobs={self.concurrency}, poll_delay=0.01, keep_result=0, "
                       "Retry(defer=0) for fail_once, uvloop")

    async def setup(self):
        self.pool = await create_pool(self.settings)

    async def close(self):
        await self.pool.aclose()

    async def enqueue(self, payload):
        await self.pool.enqueue_job("job", payload)

    async def enqueue_many(self, payloads):
        for k in range(0, len(payloads), GATHER):
            await asyncio.gather(*(self.enqueue(p) for p in payloads[k:k + GATHER]))

    async def worker(self):
        h = self.handler

        async def job(ctx, payload):
            try:
                await h.arun(payload)
            except RuntimeError:  # the planned first failure
                raise Retry(defer=0) from None

        self.w = Worker(
            [func(job, name="job")], redis_settings=self.settings, max_jobs=self.concurrency,
            poll_delay=0.01, keep_result=0, handle_signals=False, log_results=False,
            max_tries=5,
        )
        await self.w.async_run()

    async def stop_worker(self, task):
        task.cancel()
        await self.w.close()


if __name__ == "__main__":
    run_async_driver(ArqPeer)
