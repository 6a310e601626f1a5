"""A job's status, read from its record, its entry and the group's pending list.

``running`` is not written by any script: delivery itself (XREADGROUP) is the
transition, and the consumer group's pending list is its record. A job whose record
says ``waiting`` and whose entry is pending is reported as running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from streamjobs import replies
from streamjobs.contract import (
    DEP_STATE,
    HISTORY_LENGTH,
    PRIORITIES,
    RUNNING_RECORDED_AS,
    STASH_B,
    STREAM_ID,
    Event,
    JobState,
    Priority,
    Rec,
    Wire,
    job_id_of,
)
from streamjobs.errors import CorruptData
from streamjobs.keys import GROUP, PARTITIONS_FIELD, parse_partitions
from streamjobs.reconnect import lost_group
from streamjobs.records import Record, json_or_text, opt_int, split_fields, text

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys


@dataclass(frozen=True, slots=True)
class JobStatus(Record):
    """A job's state and record. Times are ms since the epoch on the server clock."""

    id: str
    type: str
    state: JobState
    attempts: int
    max_attempts: int | None
    enqueued_at: int | None
    updated_at: int | None
    finished_at: int | None
    due_at: int | None
    error: str | None
    traceback: str | None
    reason: str | None
    result: Any
    payload: Any
    headers: dict[str, str]
    entry_id: str | None
    consumer: str | None = None
    deliveries: int = 0
    #: ``high``, ``normal`` or ``low`` (``contract.Priority``).
    priority: str = Priority.NORMAL
    #: The jobs it runs after (``after``), as refs ``<type>/<id>``, and those known to run
    #: after it (kept for the result retention once it has ended).
    parents: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)
    #: The last progress its handler reported (0 to 1) and its message.
    progress: float | None = None
    progress_message: str | None = None
    #: Its handler's log lines, oldest first (the last ``contract.LOG_LINES``).
    logs: list[str] = field(default_factory=list)
    #: One dict per attempt, oldest first (the last ``contract.HISTORY_LENGTH``): attempt,
    #: started_at, duration_ms, worker, outcome (completed, retrying, dead), error.
    history: list[dict[str, Any]] = field(default_factory=list)


async def _entry_fields(redis: Redis, stream: str, entry_id: str) -> dict[bytes, bytes]:
    rows = replies.entries(await redis.xrange(stream, entry_id, entry_id))
    return dict(rows[0][1]) if rows else {}


async def _pending_info(redis: Redis, tk: TypeKeys, entry_id: str) -> tuple[str, int] | None:
    try:
        reply = await redis.xpending_range(tk.stream, GROUP, entry_id, entry_id, 1)
    except ResponseError as e:
        if not lost_group(e):
            raise
        return None  # no group yet (no worker, no producer of this engine): not delivered
    rows = replies.pending_rows(reply)
    if not rows:
        return None
    row = rows[0]
    return text(row["consumer"]) or "", int(row["times_delivered"])


def _state_of(tk: TypeKeys, job_id: str, raw: bytes | None) -> JobState:
    """The record's state; one this engine does not know (a newer version's, or a record
    written by hand) is the server's data problem, not the caller's."""
    try:
        return JobState((raw or b"").decode())
    except (ValueError, UnicodeDecodeError):
        raise CorruptData(
            f"job {job_id!r} of type {tk.type!r} has a record this engine cannot read "
            f"(state {raw!r}): written by another version of streamjobs, or by hand?"
        ) from None


async def type_status(redis: Redis, tk: TypeKeys, job_id: str) -> JobStatus | None:
    """A job's status in whichever partition of its type holds it. The record and the
    type's partition count are read in one round trip (one slot): an unpartitioned
    type's lookup costs what it did before partitions existed."""
    found = await locate(redis, tk, job_id)
    return found[1] if found is not None else None


async def locate(redis: Redis, tk: TypeKeys, job_id: str
                 ) -> tuple[TypeKeys, JobStatus] | None:
    """The partition of its type that holds a job (its keys) and the job's status there;
    None when no partition knows it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(tk.job(job_id))
        pipe.hget(tk.config, PARTITIONS_FIELD)
        raw, n = await pipe.execute()
    rec = replies.hash_fields(raw)
    parts = tk.partitions(parse_partitions(n))
    if rec or len(parts) == 1:
        status = await job_status(redis, parts[0], job_id, rec)
        return None if status is None else (parts[0], status)
    async with redis.pipeline(transaction=False) as pipe:
        for part in parts[1:]:
            pipe.hgetall(part.job(job_id))
        found = await pipe.execute()
    for part, raw in zip(parts[1:], found, strict=True):
        rec = replies.hash_fields(raw)
        if rec:
            status = await job_status(redis, part, job_id, rec)
            return None if status is None else (part, status)
    for part in parts:  # a plain XADD's job: no record until it moves
        status = await _status_without_record(redis, part, job_id)
        if status is not None:
            return part, status
    return None


async def job_status(redis: Redis, tk: TypeKeys, job_id: str,
                     rec: dict[bytes, bytes] | None = None) -> JobStatus | None:
    """A job's status in one partition (``rec``: its record, when already read)."""
    if rec is None:
        rec = replies.hash_fields(await redis.hgetall(tk.job(job_id)))
    if not rec:
        return await _status_without_record(redis, tk, job_id)
    state = _state_of(tk, job_id, rec.get(Rec.STATE.b))
    # Only a waiting (or running) job has a live entry; others may keep a stale id.
    entry_id = text(rec.get(Rec.ENTRY.b)) if state is RUNNING_RECORDED_AS else None
    consumer, deliveries = None, 0
    entry: dict[bytes, bytes] = {}
    if state in (JobState.DELAYED, JobState.BLOCKED):
        payload, headers = split_fields(rec, STASH_B)
    elif state is JobState.DEAD and rec.get(Rec.DEAD_ENTRY.b):
        dead = await _entry_fields(redis, tk.dead, rec[Rec.DEAD_ENTRY.b].decode())
        payload, headers = split_fields(dead, STASH_B)
    elif state is RUNNING_RECORDED_AS and entry_id:
        level = text(rec.get(Rec.PRIORITY.b))  # its entry is in its level's stream
        if level in PRIORITIES:
            tk = tk.at(Priority(level))
        entry = await _entry_fields(redis, tk.stream, entry_id)
        payload, headers = split_fields(entry)
        pending = await _pending_info(redis, tk, entry_id)
        if pending:
            state, (consumer, deliveries) = JobState.RUNNING, pending
    else:
        payload, headers = None, {}
    return JobStatus(
        id=job_id, type=tk.type, state=state,
        attempts=opt_int(rec.get(Rec.ATTEMPTS.b)) or 0,
        max_attempts=opt_int(rec.get(Rec.MAX_ATTEMPTS.b)
                             or rec.get(STASH_B + Wire.MAX_ATTEMPTS.b)),
        enqueued_at=opt_int(rec.get(Rec.ENQUEUED_AT.b)),
        updated_at=opt_int(rec.get(Rec.UPDATED_AT.b)),
        finished_at=opt_int(rec.get(Rec.FINISHED_AT.b)),
        due_at=opt_int(rec.get(Rec.DUE_AT.b)),
        error=text(rec.get(Rec.ERROR.b)), traceback=text(rec.get(Rec.TRACEBACK.b)),
        reason=text(rec.get(Rec.REASON.b)), result=json_or_text(rec.get(Rec.RESULT.b)),
        payload=payload, headers=headers, entry_id=entry_id,
        consumer=consumer, deliveries=deliveries, **extras(rec),
        priority=text(rec.get(Rec.PRIORITY.b) or rec.get(STASH_B + Wire.PRIORITY.b))
        or Priority.NORMAL,
        parents=_parents(rec, entry),
        dependents=sorted(m.decode("utf-8", "replace") for m in replies.member_set(
            await redis.smembers(tk.dependents(job_id)))),
    )


def _parents(rec: dict[bytes, bytes], entry: dict[bytes, bytes]) -> list[str]:
    """A job's parent refs: those heard from (``dep:<ref>``) and those it names."""
    refs = {k[len(DEP_STATE):].decode("utf-8", "replace") for k in rec
            if k.startswith(DEP_STATE.encode())}
    named = rec.get(STASH_B + Wire.DEPENDS_ON.b) or entry.get(Wire.DEPENDS_ON.b)
    if named:
        try:
            refs.update(r for r in orjson.loads(named) if isinstance(r, str))
        except orjson.JSONDecodeError:
            pass  # the entry's own problem: dead-lettered as malformed when it is read
    return sorted(refs)


def extras(rec: dict[bytes, bytes]) -> dict[str, Any]:
    """A record's progress, log lines and attempt history (``JobStatus`` fields)."""
    raw_progress = rec.get(Rec.PROGRESS.b)
    logs = rec.get(Rec.LOGS.b)
    return {
        "progress": float(raw_progress) if raw_progress else None,
        "progress_message": text(rec.get(Rec.PROGRESS_MESSAGE.b)),
        "logs": logs.decode("utf-8", "replace").split("\n") if logs else [],
        "history": history(rec),
    }


_COMPLETED = JobState.COMPLETED.value.encode()


def history(rec: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """The attempts, oldest first: the failed ones from the record's ``history`` (written
    by fail.lua), then a completed one from the record's own fields (ack.lua writes no
    history: a job done at its first attempt keeps a small record)."""
    raw = rec.get(Rec.HISTORY.b)
    out = [orjson.loads(line) for line in raw.split(b"\n")] if raw else []
    worker = rec.get(Rec.FINISHED_BY.b)
    if rec.get(Rec.STATE.b) == _COMPLETED and worker is not None:
        finished = opt_int(rec.get(Rec.FINISHED_AT.b))
        duration = opt_int(rec.get(Rec.DURATION_MS.b))
        known = duration is not None and duration >= 0 and finished is not None
        out.append({"attempt": opt_int(rec.get(Rec.ATTEMPTS.b)) or 1,
                    "started_at": finished - duration if known else None,  # type: ignore[operator]
                    "duration_ms": duration if known else None,
                    "worker": worker.decode("utf-8", "replace"),
                    "outcome": Event.COMPLETED.value})
    return out[-HISTORY_LENGTH:]


#: A job with no record (a plain XADD not moved yet) is looked for among this many entries
#: from the stream's head: the stream holds only waiting and running entries.
SCAN_LIMIT = 10_000
SCAN_PAGE = 1_000


async def find_entry(redis: Redis, tk: TypeKeys, job_id: str
                     ) -> tuple[str, dict[bytes, bytes]] | None:
    """The live entry of a job that has no record yet: by its entry id, or (a plain XADD
    with its own ``id`` field) by a bounded scan of the stream. Costs nothing on the
    engine's paths: only a lookup that found no record comes here."""
    if STREAM_ID.fullmatch(job_id):
        fields = await _entry_fields(redis, tk.stream, job_id)
        if fields and job_id_of(job_id, fields) == job_id:
            return job_id, fields
    want = job_id.encode()
    start, seen = "-", 0
    while seen < SCAN_LIMIT:
        rows = replies.entries(await redis.xrange(tk.stream, start, "+", count=SCAN_PAGE))
        for entry, fields in rows:
            if fields.get(Wire.ID.b) == want and job_id_of(entry.decode(), fields) == job_id:
                return entry.decode(), dict(fields)
        if len(rows) < SCAN_PAGE:
            return None
        seen += len(rows)
        start = "(" + rows[-1][0].decode()
    return None


async def _status_without_record(redis: Redis, tk: TypeKeys, job_id: str) -> JobStatus | None:
    """A job written by a plain XADD has no record until its first transition."""
    found = await find_entry(redis, tk, job_id)
    if found is None:
        return None
    entry_id, fields = found
    payload, headers = split_fields(fields)
    pending = await _pending_info(redis, tk, entry_id)
    return JobStatus(
        id=job_id, type=tk.type, state=JobState.RUNNING if pending else JobState.WAITING,
        attempts=0, max_attempts=opt_int(fields.get(Wire.MAX_ATTEMPTS.b)),
        enqueued_at=int(entry_id.partition("-")[0]), updated_at=None,
        finished_at=None, due_at=None, error=None, traceback=None, reason=None,
        result=None, payload=payload, headers=headers, entry_id=entry_id,
        consumer=pending[0] if pending else None, deliveries=pending[1] if pending else 0,
    )
