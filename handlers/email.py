"""`email`: a typical I/O-bound job with a permanent-error path.

Payload: {"to": "a@b.c", "subject": "...", "body": "..."}. A real handler would call
an SMTP or HTTP API here; this one validates and pretends, so the example runs anywhere.
The job id doubles as the idempotency key a real mail API would take, since delivery is
at least once.
"""

import anyio

from streamjobs import Job, PermanentError, handler


@handler("email", max_attempts=5, immediate_retries=1, backoff_base=2.0, timeout=30)
async def send_email(job: Job) -> dict[str, str]:
    to = job.payload.get("to") if isinstance(job.payload, dict) else None
    if not isinstance(to, str) or "@" not in to:
        # Retrying cannot fix a bad address: straight to the dead stream.
        raise PermanentError(f"invalid recipient {to!r}")
    await anyio.sleep(0.01)  # the network call
    return {"sent_to": to, "idempotency_key": job.id}
