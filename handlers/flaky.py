"""`flaky`: fails on purpose, to show retries, backoff and the dead stream.

Payload: {"fail_times": 2} fails the first two attempts, then succeeds;
{"always": true} fails every attempt and ends dead; {"retry_after": 5} asks to be
retried in 5 s once.
"""

from streamjobs import Job, RetryAfter, handler


@handler("flaky", max_attempts=4, immediate_retries=1, backoff_base=0.5, backoff_cap=5)
async def flaky(job: Job) -> str:
    p = job.payload if isinstance(job.payload, dict) else {}
    if p.get("always"):
        raise RuntimeError(f"failing on purpose (attempt {job.attempt})")
    if "retry_after" in p and job.attempt == 1:
        raise RetryAfter(float(p["retry_after"]))
    if job.attempt <= int(p.get("fail_times", 0)):
        raise RuntimeError(f"failing on purpose (attempt {job.attempt})")
    return f"succeeded on attempt {job.attempt}"
