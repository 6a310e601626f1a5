"""Handlers for worker subprocesses in tests (`python -m streamjobs worker tests.workers`).

The type and policy come from the environment so each test gets its own isolated type:
SJ_TEST_TYPE, SJ_VT (visibility timeout), SJ_MAX_DELIVERIES. Every run of a job is
counted in the hash `test:{TYPE}:runs` (job id -> runs), so tests can find duplicates.
Payload modes: {"sleep": s} sleeps; {"sleep_first_delivery": s} sleeps only the first
time the entry is delivered; {"die": true} kills its own process mid-job.
"""

from __future__ import annotations

import os
import signal

import anyio
from redis.asyncio import Redis

from streamjobs import Job, handler
from streamjobs.connection import client_from_url

TYPE = os.environ["SJ_TEST_TYPE"]
RUNS = f"test:{{{TYPE}}}:runs"
_client: Redis | None = None


def client() -> Redis:
    global _client
    if _client is None:
        _client = client_from_url(os.environ["STREAMJOBS_REDIS_URL"])
    return _client


@handler(TYPE, visibility_timeout=float(os.environ.get("SJ_VT", "30")),
         max_deliveries=int(os.environ.get("SJ_MAX_DELIVERIES", "3")), timeout=120)
async def work(job: Job) -> None:
    await client().hincrby(RUNS, job.id, 1)
    if job.payload.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    if job.payload.get("sleep_first_delivery") and job.deliveries == 1:
        await anyio.sleep(float(job.payload["sleep_first_delivery"]))
    if job.payload.get("sleep"):
        await anyio.sleep(float(job.payload["sleep"]))


if os.environ.get("SJ_EVERY"):
    # A second type with a schedule declared in code: one tick every SJ_EVERY seconds.
    @handler(f"{TYPE}-cron", every=float(os.environ["SJ_EVERY"]), schedule_payload={})
    async def tick(job: Job) -> None:
        await client().hincrby(RUNS, job.id, 1)
