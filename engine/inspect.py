"""Read-only queries: a job's status, per-type counts. No transitions here.

``running`` is not written by any script: delivery itself (XREADGROUP) is the
transition, and the consumer group's pending list is its record. A job whose record
says ``waiting`` and whose entry is pending is reported as running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

import orjson

from streamjobs import replies
from streamjobs.job import JobState
from streamjobs.keys import GROUP, TypeKeys

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis


class Record:
    """Mixin for the read-only records: ``to_dict`` gives JSON-ready fields (states are
    ``StrEnum`` members, which serialise as their text). The API uses these dataclasses
    as its response schemas directly."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(cast("Any", self))}


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


def _txt(v: bytes | None) -> str | None:
    return v.decode("utf-8", "replace") if v is not None and v != b"" else None


def _int(v: bytes | None) -> int | None:
    try:
        return int(v) if v not in (None, b"") else None
    except ValueError:
        return None


def _json(v: bytes | None) -> Any:
    if v in (None, b""):
        return None
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return v.decode("utf-8", "replace")


def split_fields(fields: dict[bytes, bytes], prefix: bytes = b"") -> tuple[Any, dict[str, str]]:
    """(payload, headers) from job fields, optionally stored under a name prefix."""
    from streamjobs.job import RESERVED

    payload: Any = None
    headers: dict[str, str] = {}
    for k, v in fields.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):].decode("utf-8", "replace")
        if name == "payload":
            payload = _json(v)
        elif name not in RESERVED:
            headers[name] = v.decode("utf-8", "replace")
    return payload, headers


async def _entry_fields(redis: Redis, stream: str, entry_id: str) -> dict[bytes, bytes]:
    rows = replies.entries(await redis.xrange(stream, entry_id, entry_id))
    return dict(rows[0][1]) if rows else {}


async def _pending_info(redis: Redis, tk: TypeKeys, entry_id: str) -> tuple[str, int] | None:
    rows = replies.pending_rows(await redis.xpending_range(tk.stream, GROUP, entry_id, entry_id, 1))
    if not rows:
        return None
    row = rows[0]
    return _txt(row["consumer"]) or "", int(row["times_delivered"])


async def job_status(redis: Redis, tk: TypeKeys, job_id: str) -> JobStatus | None:
    rec = replies.hash_fields(await redis.hgetall(tk.job(job_id)))
    if not rec:
        return await _status_without_record(redis, tk, job_id)
    state = JobState(rec[b"state"].decode())
    # Only a waiting (or running) job has a live entry; others may keep a stale id.
    entry_id = _txt(rec.get(b"entry")) if state is JobState.WAITING else None
    consumer, deliveries = None, 0
    if state is JobState.DELAYED:
        payload, headers = split_fields(rec, b"f:")
    elif state is JobState.DEAD and rec.get(b"dead_entry"):
        dead = await _entry_fields(redis, tk.dead, rec[b"dead_entry"].decode())
        payload, headers = split_fields(dead, b"f:")
    elif state is JobState.WAITING and entry_id:
        payload, headers = split_fields(await _entry_fields(redis, tk.stream, entry_id))
        pending = await _pending_info(redis, tk, entry_id)
        if pending:
            state, (consumer, deliveries) = JobState.RUNNING, pending
    else:
        payload, headers = None, {}
    return JobStatus(
        id=job_id, type=tk.type, state=state,
        attempts=_int(rec.get(b"attempts")) or 0,
        max_attempts=_int(rec.get(b"max_attempts") or rec.get(b"f:max_attempts")),
        enqueued_at=_int(rec.get(b"enqueued_at")),
        updated_at=_int(rec.get(b"updated_at")),
        finished_at=_int(rec.get(b"finished_at")),
        due_at=_int(rec.get(b"due_at")),
        error=_txt(rec.get(b"error")), traceback=_txt(rec.get(b"traceback")),
        reason=_txt(rec.get(b"reason")), result=_json(rec.get(b"result")),
        payload=payload, headers=headers, entry_id=entry_id,
        consumer=consumer, deliveries=deliveries,
    )


async def _status_without_record(redis: Redis, tk: TypeKeys, job_id: str) -> JobStatus | None:
    """A job written by a plain XADD has no record until its first transition."""
    head, _, seq = job_id.partition("-")
    if not (head.isdigit() and seq.isdigit()):
        return None
    fields = await _entry_fields(redis, tk.stream, job_id)
    if not fields:
        return None
    payload, headers = split_fields(fields)
    pending = await _pending_info(redis, tk, job_id)
    return JobStatus(
        id=job_id, type=tk.type, state=JobState.RUNNING if pending else JobState.WAITING,
        attempts=0, max_attempts=None, enqueued_at=int(head), updated_at=None,
        finished_at=None, due_at=None, error=None, traceback=None, reason=None,
        result=None, payload=payload, headers=headers, entry_id=job_id,
        consumer=pending[0] if pending else None, deliveries=pending[1] if pending else 0,
    )


@dataclass(frozen=True, slots=True)
class TypeStats(Record):
    """Counts of one type; ``oldest_waiting_age`` is in seconds."""

    type: str
    waiting: int
    running: int
    delayed: int
    dead: int
    completed: int
    retried: int
    enqueued: int
    #: Age in seconds of the oldest entry not yet delivered (0 when none).
    oldest_waiting_age: float


@dataclass(frozen=True, slots=True)
class Counts:
    """One type's figures from the replies of :func:`queue_counts`."""

    waiting: int
    running: int
    delayed: int
    dead: int
    counters: dict[bytes, bytes]
    #: The group's last delivered id: the oldest waiting entry comes after it.
    last_delivered: str | None

    def counter(self, name: str) -> int:
        return int(self.counters.get(name.encode(), 0))


#: Replies :func:`queue_counts` adds to a pipeline per type.
COUNT_REPLIES = 6


def queue_counts(pipe: Any, tk: TypeKeys) -> None:
    """Queue one type's count commands on a pipeline (sync or async: queueing is sync).

    Waiting is ``XLEN - pending``: acked entries are deleted, so the stream holds only
    waiting and running entries (the group's lag is undefined after some XDELs).
    """
    pipe.xlen(tk.stream)
    pipe.xpending(tk.stream, GROUP)
    pipe.zcard(tk.delayed)
    pipe.xlen(tk.dead)
    pipe.hgetall(tk.stats)
    pipe.xinfo_groups(tk.stream)


def parse_counts(res: Sequence[Any]) -> Counts:
    """Read the replies of :func:`queue_counts` (errors, e.g. no stream yet, count as 0)."""
    length, pend, delayed, dead, counters, groups = res
    length = length if isinstance(length, int) else 0
    running = int(pend["pending"]) if isinstance(pend, dict) else 0
    last = None
    for g in groups if isinstance(groups, list) else ():
        if g["name"] in (GROUP, GROUP.encode()):
            raw = g["last-delivered-id"]
            last = raw.decode() if isinstance(raw, bytes) else raw
    return Counts(
        waiting=max(0, length - running), running=running,
        delayed=delayed if isinstance(delayed, int) else 0,
        dead=dead if isinstance(dead, int) else 0,
        counters=counters if isinstance(counters, dict) else {}, last_delivered=last,
    )


def oldest_age(found: Any, now_ms: int) -> float:
    """Age in seconds of the entry an ``XRANGE (last-delivered + COUNT 1`` found."""
    if not isinstance(found, list) or not found:
        return 0.0
    first_ms = int(found[0][0].split(b"-")[0])
    return max(0.0, (now_ms - first_ms) / 1000)


async def type_stats(redis: Redis, tk: TypeKeys) -> TypeStats:
    """Counts for one type in one round trip (+1 for the oldest waiting age)."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_counts(pipe, tk)
        pipe.time()
        res = await pipe.execute(raise_on_error=False)
    c = parse_counts(res[:COUNT_REPLIES])
    sec, usec = res[COUNT_REPLIES]
    age = 0.0
    if c.waiting and c.last_delivered:
        found = await redis.xrange(tk.stream, f"({c.last_delivered}", "+", count=1)
        age = oldest_age(found, sec * 1000 + usec // 1000)
    return TypeStats(
        type=tk.type, waiting=c.waiting, running=c.running, delayed=c.delayed, dead=c.dead,
        completed=c.counter("completed"), retried=c.counter("retried"),
        enqueued=c.counter("enqueued"), oldest_waiting_age=age,
    )


async def known_types(redis: Redis, prefix: str) -> list[str]:
    from streamjobs.keys import types_key

    return sorted(m.decode() for m in replies.member_set(await redis.smembers(types_key(prefix))))


# ---- listing jobs by state (read-only, one or two round trips per page) ----------------

STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
#: Upper bound of one page.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class JobSummary(Record):
    """One row of a job list: what the listing query reads anyway, never the payload."""

    id: str
    state: JobState
    entry_id: str | None = None
    enqueued_at: int | None = None
    attempts: int | None = None
    due_at: int | None = None
    finished_at: int | None = None
    consumer: str | None = None
    deliveries: int | None = None
    idle_ms: int | None = None
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[JobSummary]
    #: Pass back as ``cursor`` for the next page; None on the last page.
    next_cursor: str | None


def _check_page(cursor: str | None, limit: int, stream: bool) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    if cursor is None:
        return
    if stream and not STREAM_ID.fullmatch(cursor):
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a page")
    if not stream:
        score, sep, member = cursor.partition(":")
        if not (sep and score.isdigit() and member):
            raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a page")


def _id_of(entry_id: str, fields: dict[bytes, bytes]) -> str:
    raw = fields.get(b"id")
    return raw.decode("utf-8", "replace") if raw else entry_id


def _entry_summary(state: JobState, eid: bytes, fields: dict[bytes, bytes]) -> JobSummary:
    entry_id = eid.decode()
    return JobSummary(
        id=_id_of(entry_id, fields), state=state, entry_id=entry_id,
        enqueued_at=_int(fields.get(b"enqueued_at")) or int(entry_id.partition("-")[0]),
        attempts=_int(fields.get(b"attempts")) or 0,
    )


def _after(cursor: str | None, floor: str | None) -> str:
    """XRANGE start strictly after the later of the cursor and the floor."""
    ids = [c for c in (cursor, floor) if c]
    if not ids:
        return "-"
    return "(" + max(ids, key=lambda s: tuple(int(p) for p in s.split("-")))


async def _list_waiting(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    # Entries after the group's last-delivered id were never delivered.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xinfo_groups(tk.stream)
        (groups,) = await pipe.execute(raise_on_error=False)
    groups = groups if isinstance(groups, list) else []
    group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
    last = group["last-delivered-id"] if group else None
    last = last.decode() if isinstance(last, bytes) else last
    rows = replies.entries(
        await redis.xrange(tk.stream, _after(cursor, last), "+", count=limit + 1)
    )
    jobs = [_entry_summary(JobState.WAITING, eid, f) for eid, f in rows[:limit]]
    return Page(jobs, jobs[-1].entry_id if len(rows) > limit else None)


async def _list_running(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    start = f"({cursor}" if cursor else "-"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xpending_range(tk.stream, GROUP, start, "+", limit + 1)
        (rows,) = await pipe.execute(raise_on_error=False)
    if not isinstance(rows, list):  # no stream or no group yet
        return Page([], None)
    async with redis.pipeline(transaction=False) as pipe:
        for row in rows[:limit]:
            pipe.xrange(tk.stream, row["message_id"], row["message_id"])
        entries = await pipe.execute()
    jobs = []
    for row, found in zip(rows[:limit], entries, strict=True):
        base = _entry_summary(JobState.RUNNING, row["message_id"], dict(found[0][1]) if found
                              else {})
        jobs.append(JobSummary(
            id=base.id, state=JobState.RUNNING, entry_id=base.entry_id,
            enqueued_at=base.enqueued_at, attempts=base.attempts,
            consumer=_txt(row["consumer"]), deliveries=int(row["times_delivered"]),
            idle_ms=int(row["time_since_delivered"]),
        ))
    return Page(jobs, jobs[-1].entry_id if len(rows) > limit else None)


async def _zset_page(
    redis: Redis, key: str, cursor: str | None, limit: int, min_score: int | None = None
) -> tuple[list[tuple[str, int]], str | None]:
    """A page of a sorted set by (score, member); ties at one score keep their order."""
    rows: list[tuple[bytes, float]]
    if cursor is None:
        low = str(min_score) if min_score is not None else "-inf"
        rows = replies.scored(await redis.zrange(
            key, low, "+inf", byscore=True, offset=0, num=limit + 1, withscores=True))
    else:
        score, _, member = cursor.partition(":")
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zscore(key, member)
            pipe.zrank(key, member)
            now_score, rank = await pipe.execute()
        if now_score is not None and int(now_score) == int(score):
            rows = replies.scored(
                await redis.zrange(key, rank + 1, rank + limit + 1, withscores=True)
            )
        else:  # the cursor's member left: resume after its score (ties kept by member order)
            rows = await _after_missing(redis, key, int(score), member, limit)
    items = [(m.decode("utf-8", "replace"), int(s)) for m, s in rows]
    page = items[:limit]
    nxt = f"{page[-1][1]}:{page[-1][0]}" if len(items) > limit else None
    return page, nxt


async def _after_missing(
    redis: Redis, key: str, score: int, member: str, limit: int
) -> list[tuple[bytes, float]]:
    offset, want = 0, limit + 1
    while True:
        rows = replies.scored(await redis.zrange(
            key, score, "+inf", byscore=True, offset=offset, num=want, withscores=True))
        kept = [(m, s) for m, s in rows if int(s) > score or m.decode("utf-8", "replace") > member]
        if kept or len(rows) < want:
            return kept[: limit + 1]
        offset += want  # a run of ties before the cursor: skip it


async def _list_delayed(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    page, nxt = await _zset_page(redis, tk.delayed, cursor, limit)
    return Page([JobSummary(id=m, state=JobState.DELAYED, due_at=s) for m, s in page], nxt)


async def _list_completed(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int,
                          since_ms: int | None = None) -> Page:
    page, nxt = await _zset_page(redis, tk.done, cursor, limit, since_ms)
    return Page([JobSummary(id=m, state=JobState.COMPLETED, finished_at=s) for m, s in page],
                nxt)


async def _list_dead(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    rows = replies.entries(
        await redis.xrange(tk.dead, f"({cursor}" if cursor else "-", "+", count=limit + 1)
    )
    jobs = []
    for eid, f in rows[:limit]:
        entry_id = eid.decode()
        jobs.append(JobSummary(
            id=_id_of(entry_id, f), state=JobState.DEAD, entry_id=entry_id,
            attempts=_int(f.get(b"attempts")) or 0, finished_at=_int(f.get(b"failed_at")),
            reason=_txt(f.get(b"reason")), error=_txt(f.get(b"error")),
        ))
    return Page(jobs, jobs[-1].entry_id if len(rows) > limit else None)


#: States a list can be filtered by (cancelled jobs are not indexed anywhere).
LISTABLE = (JobState.WAITING, JobState.RUNNING, JobState.DELAYED, JobState.COMPLETED,
            JobState.DEAD)


async def list_jobs(
    redis: Redis, tk: TypeKeys, state: JobState, *, cursor: str | None = None,
    limit: int = 50, since_ms: int | None = None,
) -> Page:
    """One page of the jobs of a type in ``state``, oldest first (delayed: soonest due).

    ``cursor`` is the previous page's ``next_cursor``. ``since_ms`` bounds completed jobs
    to those finished since then (older ids may have outlived their record).
    Raises ValueError for a bad limit or cursor, or a state that is not listable.
    """
    stream = state is not JobState.DELAYED and state is not JobState.COMPLETED
    _check_page(cursor, limit, stream)
    if state is JobState.WAITING:
        return await _list_waiting(redis, tk, cursor, limit)
    if state is JobState.RUNNING:
        return await _list_running(redis, tk, cursor, limit)
    if state is JobState.DELAYED:
        return await _list_delayed(redis, tk, cursor, limit)
    if state is JobState.COMPLETED:
        return await _list_completed(redis, tk, cursor, limit, since_ms)
    if state is JobState.DEAD:
        return await _list_dead(redis, tk, cursor, limit)
    raise ValueError(f"cannot list {state.value} jobs; listable: "
                     + ", ".join(s.value for s in LISTABLE))


# ---- workers ---------------------------------------------------------------------------

#: A worker whose heartbeat is older than this is not listed (3 missed heartbeats).
WORKER_STALE_MS = 15_000


async def live_workers(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Workers whose heartbeat is recent, from ``sj:workers`` and each ``sj:worker:<name>``."""
    from streamjobs.keys import worker_key, workers_key

    sec, usec = await redis.time()
    now_ms = sec * 1000 + usec // 1000
    names = replies.members(await redis.zrange(workers_key(prefix), now_ms - WORKER_STALE_MS,
                                               "+inf", byscore=True))
    async with redis.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.hgetall(worker_key(prefix, n.decode("utf-8", "replace")))
        records = await pipe.execute()
    out = []
    for rec in records:
        if not rec:
            continue  # expired between the two reads
        d = {k.decode(): v.decode("utf-8", "replace") for k, v in rec.items()}
        for k in ("pid", "concurrency", "in_flight", "started_at", "last_heartbeat"):
            d[k] = _int(rec.get(k.encode()))
        d["types"] = [t for t in d.get("types", "").split(",") if t]
        out.append(d)
    return sorted(out, key=lambda w: str(w.get("name")))
