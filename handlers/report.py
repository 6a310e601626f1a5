"""`report`: CPU-bound and blocking, so a plain `def`: it runs in a worker thread.

Payload: {"rows": 1000}. Returns a small summary as the job's result.
"""

import hashlib

from streamjobs import Job, handler


@handler("report", max_attempts=3, timeout=120)
def build_report(job: Job) -> dict[str, object]:
    rows = int(job.payload.get("rows", 100))
    digest = hashlib.sha256()
    for i in range(rows):
        digest.update(f"row-{i}".encode())
    return {"rows": rows, "checksum": digest.hexdigest()[:16]}
