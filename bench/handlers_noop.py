"""Handler module for the multi-process scaling workload: ``python -m streamjobs worker
bench.handlers_noop`` registers a no-op ``noop`` handler on engine's default registry."""

from __future__ import annotations

from streamjobs import Job, handler


@handler("noop", max_attempts=3, immediate_retries=1, backoff_base=0.0)
async def noop(job: Job) -> None:
    return None
