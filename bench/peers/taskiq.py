"""taskiq + taskiq-redis driver (RedisStreamBroker). Run with bench/.venvs/taskiq/bin/python."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_async_driver  # noqa: E402
from taskiq.api import run_receiver_task  # noqa: E402
from taskiq.middlewares import SimpleRetryMiddleware  # noqa: E402
from taskiq_redis import RedisStreamBroker  # noqa: E402

GATHER = 500


class TaskiqPeer(Peer):
    name = "taskiq"
    version = f"{version('taskiq')} (taskiq-redis {version('taskiq-redis')})"
    bulk_note = f"no bulk API: asyncio.gather of kiq() in chunks of {GATHER}"

    def __init__(self, args):
        super().__init__(args)
        self.config = (f"RedisStreamBroker, receiver max_async_tasks={self.concurrency}, "
                       "xread_count=100, no result backend, SimpleRetryMiddleware for "
                       "fail_once, uvloop")

    async def setup(self):
        self.broker = RedisStreamBroker(
            self.args.url, max_connection_pool_size=200, xread_count=100,
        ).with_middlewares(SimpleRetryMiddleware(default_retry_count=3))
        h = self.handler

        @self.broker.task(task_name="job", retry_on_error=True, max_retries=3)
        async def job(payload: dict) -> None:
            await h.arun(payload)

        self.job = job
        await self.broker.startup()  # creates the consumer group before anything is sent

    async def close(self):
        await self.broker.shutdown()

    async def enqueue(self, payload):
        await self.job.kiq(payload)

    async def enqueue_many(self, payloads):
        for k in range(0, len(payloads), GATHER):
            await asyncio.gather(*(self.job.kiq(p) for p in payloads[k:k + GATHER]))

    async def worker(self):
        await run_receiver_task(self.broker, max_async_tasks=self.concurrency,
                                run_startup=False)

    async def stop_worker(self, task):
        task.cancel()


if __name__ == "__main__":
    run_async_driver(TaskiqPeer)
