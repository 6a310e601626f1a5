"""Awaiting a job's end without polling: read the events stream's position, then the
record, then block on the events after that position (an end between the two reads is
in the stream, so none is missed). A partitioned type has one events stream per
partition: every partition's position is read first, then the job is looked for in
each (``status.locate``), then the wait is on the stream of the partition that holds it
(a job stays in one partition for its whole life)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamjobs.codes import Code
from streamjobs.contract import JobState
from streamjobs.errors import JobCancelled, JobExpired, JobFailed, JobNotFound, ResultTimeout
from streamjobs.events import check_events_on, last_ids, wait_final
from streamjobs.status import job_status, locate
from streamjobs.streams import partition_keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.events import JobEvent
    from streamjobs.keys import TypeKeys
    from streamjobs.status import JobStatus

FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED,
                          JobState.EXPIRED})


async def wait_status(redis: Redis, tk: TypeKeys, job_id: str,
                      timeout_s: float) -> tuple[JobStatus | None, JobEvent | None]:
    """The job's status once it has ended (or as it stands when ``timeout_s`` seconds pass
    first), and its final event when one was awaited; None at once for a job unknown."""
    parts = await partition_keys(redis, tk)
    await check_events_on(redis, parts[0])
    positions = await last_ids(redis, parts)
    found = await locate(redis, tk, job_id)
    if found is None:
        return None, None  # unknown (or expired) jobs do not end: no wait
    part, status = found
    if status.state in FINAL_STATES:
        return status, None
    event = await wait_final(redis, part, job_id, positions[part], timeout_s)
    return await job_status(redis, part, job_id), event


async def await_result(redis: Redis, tk: TypeKeys, job_id: str, timeout_s: float) -> Any:
    """The job's result once it completes; raises JobFailed (dead), JobCancelled,
    JobExpired, ResultTimeout, or JobNotFound for a job unknown when the wait ends."""
    status, event = await wait_status(redis, tk, job_id, timeout_s)
    state = status.state if status is not None else None
    if state is None and event is not None:  # the record is gone already (result_ttl 0)
        state = JobState(event.event)
    if state is JobState.COMPLETED:
        return status.result if status is not None else None
    if state is JobState.DEAD:
        if status is not None:
            raise JobFailed(job_id, status.reason, status.error)
        assert event is not None
        raise JobFailed(job_id, event.data.get("reason"), event.data.get("error"))
    if state is JobState.CANCELLED:
        raise JobCancelled(job_id, status.reason if status is not None
                           else event.data.get("reason") if event is not None else None)
    if state is JobState.EXPIRED:
        raise JobExpired(job_id)
    if event is None and status is None:
        raise JobNotFound(Code.NOT_FOUND, job_id)
    raise ResultTimeout(f"job {job_id} of {tk.type} did not finish within {timeout_s:g}s "
                        f"(it is {state})")
