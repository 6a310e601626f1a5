"""A sync (def) handler for worker subprocesses in tests (`streamjobs worker tests.sync_workers`).

SJ_TEST_TYPE names the type. Each run increments `started` and, when it gets to the end,
`finished` in the hash `test:{TYPE}:runs`; payload {"sleep": s} sleeps in between.
"""

from __future__ import annotations

import os
import time

from redis import Redis

from streamjobs import Job, handler

TYPE = os.environ["SJ_TEST_TYPE"]
RUNS = f"test:{{{TYPE}}}:runs"
_client = Redis.from_url(os.environ["STREAMJOBS_REDIS_URL"])


@handler(TYPE, timeout=120)
def work(job: Job) -> None:
    _client.hincrby(RUNS, "started", 1)
    time.sleep(float(job.payload.get("sleep", 0)))
    _client.hincrby(RUNS, "finished", 1)
