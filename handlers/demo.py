"""`demo`: echoes its payload. Try: redis-cli XADD 'sj:{demo}:stream' '*' payload '{"n":1}'."""

import logging

from streamjobs import Job, handler

log = logging.getLogger("handlers.demo")


@handler("demo")
async def demo(job: Job) -> dict[str, object]:
    log.info("demo job %s attempt %d: %s", job.id, job.attempt, job.payload)
    return {"echo": job.payload}
