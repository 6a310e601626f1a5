# docs/examples/enqueue.py — run with: python docs/examples/enqueue.py
import asyncio
import os

from streamjobs import DuplicateJob, Producer, SyncProducer

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")


async def main() -> None:
    async with Producer(URL) as p:
        try:
            job_id = await p.enqueue("welcome_email", {"to": "a@b.c"}, delay=60,
                                     max_attempts=5, job_id="welcome-42",
                                     headers={"traceparent": "00-abc-def-01"})
        except DuplicateJob:                       # enqueued before: the id makes it once
            job_id = "welcome-42"
        ids = await p.enqueue_many("welcome_email", [{"to": f"u{i}@b.c"} for i in range(100)])
        status = await p.status("welcome_email", job_id)  # .state .attempts .result .error
        print(job_id, status.state if status else None, len(ids))


asyncio.run(main())

with SyncProducer(URL) as sp:                      # for WSGI apps and scripts
    print(sp.enqueue("monthly_invoice", {"month": "2024-05"}))
