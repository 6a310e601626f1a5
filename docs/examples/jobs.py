# docs/examples/jobs.py — run with: streamjobs worker jobs  (from this directory)
from streamjobs import Job, PermanentError, handler


@handler("welcome_email", max_attempts=5, immediate_retries=1, backoff_base=2.0, timeout=30)
async def send_welcome(job: Job) -> dict[str, bool]:
    if "@" not in job.payload["to"]:
        raise PermanentError("invalid address")      # straight to the dead stream
    ...                                              # job.id is your idempotency key
    return {"sent": True}                            # kept as the job's result


@handler("monthly_invoice")
def build_invoice(job: Job) -> None:                 # plain def: runs in a thread
    ...
