"""streaq driver (anyio on asyncio, coredis, Redis Streams).

Run with bench/.venvs/streaq/bin/python.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_async_driver  # noqa: E402
from streaq import StreaqRetry, Worker  # noqa: E402

CHUNK = 1000


class StreaqPeer(Peer):
    name = "streaq"
    version = version("streaq")
    bulk_note = f"Worker.enqueue_many (one pipeline per {CHUNK} tasks)"

    def __init__(self, args):
        super().__init__(args)
        self.config = (f"Worker(concurrency={self.concurrency}), JSON serializer (default is "
                       "pickle), silent=True tasks, StreaqRetry(delay=0) for fail_once, uvloop")

    def _make(self) -> tuple[Worker, object]:
        w = Worker(redis_url=self.args.url, concurrency=self.concurrency,
                   serializer=json.dumps, deserializer=json.loads, handle_signals=False)
        h = self.handler

        @w.task(name="job", silent=True, max_tries=3, ttl=60)
        async def job(payload: dict) -> None:
            try:
                await h.arun(payload)
            except RuntimeError:  # the planned first failure
                raise StreaqRetry(delay=0) from None

        return w, job

    async def setup(self):
        self.prod, self.job = self._make()
        await self.prod.__aenter__()

    async def close(self):
        await self.prod.__aexit__(None, None, None)

    async def enqueue(self, payload):
        await self.job.enqueue(payload)

    async def enqueue_many(self, payloads):
        for k in range(0, len(payloads), CHUNK):
            await self.prod.enqueue_many([self.job.enqueue(p) for p in payloads[k:k + CHUNK]])

    async def worker(self):
        self.w, _ = self._make()
        await self.w.run_async()

    async def stop_worker(self, task):
        task.cancel()


if __name__ == "__main__":
    run_async_driver(StreaqPeer)
