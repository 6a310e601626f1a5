"""Listing a type's jobs by state, a page at a time (read-only, one or two round trips
per page). Each state is read where it lives: waiting and running from the stream and
its pending list, delayed and completed from sorted sets, dead from the dead stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamjobs import replies
from streamjobs.contract import (
    PRIORITIES,
    STREAM_ID,
    DeadField,
    JobState,
    Priority,
    Wire,
    job_id_of,
)
from streamjobs.counts import checked
from streamjobs.errors import InvalidArgument
from streamjobs.keys import GROUP
from streamjobs.records import Record, opt_int, text
from streamjobs.streams import partition_keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys


#: The cursor of a list kept in a sorted set (delayed, completed): ``score:member``.
SCORE_CURSOR = re.compile(r"[0-9]{1,20}:.+", re.DOTALL)
#: A waiting or running page that ends in a priority level's stream (``high:<entry id>``;
#: the entry id left out: that level from its start).
LEVEL_CURSOR = re.compile(f"(?:high|normal|low):(?:{STREAM_ID.pattern})?")
#: A stream id's two parts are unsigned 64-bit integers.
MAX_ID_PART = 2**64 - 1
#: Nothing comes after the largest id, so no page hands it out as a cursor.
_LAST_ID = (MAX_ID_PART, MAX_ID_PART)
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


def check_stream_cursor(cursor: str) -> str:
    """``cursor`` if it is a stream id the server accepts, else InvalidArgument."""
    parts = tuple(int(p) for p in cursor.split("-")) if STREAM_ID.fullmatch(cursor) else ()
    if not parts or max(parts) > MAX_ID_PART or parts == _LAST_ID:
        raise InvalidArgument(f"invalid cursor {cursor!r}: pass back the next_cursor of a page")
    return cursor


def _check_page(cursor: str | None, limit: int, stream: bool) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}")
    if cursor is None:
        return
    if stream:
        check_stream_cursor(cursor)
        return
    if not SCORE_CURSOR.fullmatch(cursor):
        raise InvalidArgument(f"invalid cursor {cursor!r}: pass back the next_cursor of a page")


def _entry_summary(state: JobState, eid: bytes, fields: dict[bytes, bytes]) -> JobSummary:
    entry_id = eid.decode()
    return JobSummary(
        id=job_id_of(entry_id, fields), state=state, entry_id=entry_id,
        enqueued_at=opt_int(fields.get(Wire.ENQUEUED_AT.b)) or int(entry_id.partition("-")[0]),
        attempts=opt_int(fields.get(Wire.ATTEMPTS.b)) or 0,
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
    groups = checked(groups) or []
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
    rows = checked(rows)
    if rows is None:  # no stream or no group yet
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
            consumer=text(row["consumer"]), deliveries=int(row["times_delivered"]),
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


async def _list_blocked(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    # Scored by when the job's registration with its parents was last made sure of.
    page, nxt = await _zset_page(redis, tk.blocked, cursor, limit)
    return Page([JobSummary(id=m, state=JobState.BLOCKED) for m, _ in page], nxt)


async def _list_completed(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int,
                          since_ms: int | None = None) -> Page:
    page, nxt = await _zset_page(redis, tk.done, cursor, limit, since_ms)
    return Page([JobSummary(id=m, state=JobState.COMPLETED, finished_at=s) for m, s in page],
                nxt)


async def _list_expired(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int,
                        since_ms: int | None = None) -> Page:
    page, nxt = await _zset_page(redis, tk.expired, cursor, limit, since_ms)
    return Page([JobSummary(id=m, state=JobState.EXPIRED, finished_at=s) for m, s in page],
                nxt)


async def _list_dead(redis: Redis, tk: TypeKeys, cursor: str | None, limit: int) -> Page:
    rows = replies.entries(
        await redis.xrange(tk.dead, f"({cursor}" if cursor else "-", "+", count=limit + 1)
    )
    jobs = []
    for eid, f in rows[:limit]:
        entry_id = eid.decode()
        jobs.append(JobSummary(
            id=job_id_of(entry_id, f), state=JobState.DEAD, entry_id=entry_id,
            attempts=opt_int(f.get(DeadField.ATTEMPTS.b)) or 0,
            finished_at=opt_int(f.get(DeadField.FAILED_AT.b)),
            reason=text(f.get(DeadField.REASON.b)), error=text(f.get(DeadField.ERROR.b)),
        ))
    return Page(jobs, jobs[-1].entry_id if len(rows) > limit else None)


#: States a list can be filtered by (cancelled jobs are not indexed anywhere).
LISTABLE = (JobState.WAITING, JobState.RUNNING, JobState.DELAYED, JobState.COMPLETED,
            JobState.DEAD, JobState.EXPIRED, JobState.BLOCKED)


async def list_jobs(
    redis: Redis, tk: TypeKeys, state: JobState, *, cursor: str | None = None,
    limit: int = 50, since_ms: int | None = None,
) -> Page:
    """One page of the jobs of a type in ``state``, oldest first (delayed: soonest due).

    ``cursor`` is the previous page's ``next_cursor``. ``since_ms`` bounds completed jobs
    to those finished since then (older ids may have outlived their record).
    Raises InvalidArgument for a bad limit or cursor, or a state that is not listable.
    """
    stream = state not in (JobState.DELAYED, JobState.COMPLETED, JobState.EXPIRED,
                           JobState.BLOCKED)
    if state in (JobState.WAITING, JobState.RUNNING):
        return await _across_levels(redis, tk, state, cursor, limit)
    _check_page(cursor, limit, stream)
    if state is JobState.DELAYED:
        return await _list_delayed(redis, tk, cursor, limit)
    if state is JobState.BLOCKED:
        return await _list_blocked(redis, tk, cursor, limit)
    if state is JobState.COMPLETED:
        return await _list_completed(redis, tk, cursor, limit, since_ms)
    if state is JobState.DEAD:
        return await _list_dead(redis, tk, cursor, limit)
    if state is JobState.EXPIRED:
        return await _list_expired(redis, tk, cursor, limit, since_ms)
    raise InvalidArgument(f"cannot list {state.value} jobs; listable: "
                     + ", ".join(s.value for s in LISTABLE))


#: A page of waiting or running jobs that ends in a priority level's stream says so in its
#: cursor: ``high:<entry id>`` (a cursor without a level is of the type's own stream).
_LEVEL_ORDER = [Priority.HIGH, Priority.NORMAL, Priority.LOW]


def _level_cursor(cursor: str | None) -> tuple[int, str | None]:
    """(index in :data:`_LEVEL_ORDER`, entry id or None) of a waiting/running cursor."""
    if cursor is None:
        return 0, None
    level, sep, rest = cursor.partition(":")
    if sep and level in PRIORITIES:
        return _LEVEL_ORDER.index(Priority(level)), rest or None
    return _LEVEL_ORDER.index(Priority.NORMAL), cursor


async def _across_levels(redis: Redis, tk: TypeKeys, state: JobState, cursor: str | None,
                         limit: int) -> Page:
    """Waiting or running jobs level by level, in the order they start: high, normal,
    low (each level's stream oldest first)."""
    start, entry = _level_cursor(cursor)
    _check_page(entry, limit, True)
    one = _list_waiting if state is JobState.WAITING else _list_running
    jobs: list[JobSummary] = []
    for i in range(start, len(_LEVEL_ORDER)):
        if len(jobs) == limit:
            return Page(jobs, f"{_LEVEL_ORDER[i]}:")
        page = await one(redis, tk.at(_LEVEL_ORDER[i]), entry if i == start else None,
                         limit - len(jobs))
        jobs += page.jobs
        if page.next_cursor:
            level = _LEVEL_ORDER[i]
            return Page(jobs, page.next_cursor if level is Priority.NORMAL
                        else f"{level}:{page.next_cursor}")
    return Page(jobs, None)


def _order(state: JobState, job: JobSummary) -> tuple[int, int, str]:
    if state is JobState.DELAYED:
        return job.due_at or 0, 0, job.id
    if state is JobState.COMPLETED:
        return job.finished_at or 0, 0, job.id
    ms, _, seq = (job.entry_id or "0-0").partition("-")
    return int(ms), int(seq), ""


def _cursor(state: JobState, job: JobSummary) -> str | None:
    if state is JobState.DELAYED:
        return f"{job.due_at}:{job.id}"
    if state is JobState.COMPLETED:
        return f"{job.finished_at}:{job.id}"
    return job.entry_id


async def list_type_jobs(
    redis: Redis, tk: TypeKeys, state: JobState, *, cursor: str | None = None,
    limit: int = 50, since_ms: int | None = None,
) -> Page:
    """:func:`list_jobs` of a type over all its partitions: each partition's page from
    the same cursor, merged in order (an unpartitioned type: one page as before)."""
    parts = await partition_keys(redis, tk)
    if len(parts) == 1:
        return await list_jobs(redis, tk, state, cursor=cursor, limit=limit,
                               since_ms=since_ms)
    pages = [await list_jobs(redis, part, state, cursor=cursor, limit=limit,
                             since_ms=since_ms) for part in parts]
    rows = sorted((j for p in pages for j in p.jobs), key=lambda j: _order(state, j))
    end = min(limit, len(rows))
    while 0 < end < len(rows) and _order(state, rows[end]) == _order(state, rows[end - 1]):
        end += 1  # equal stream ids in two partitions stay on one page
    more = len(rows) > end or any(p.next_cursor for p in pages)
    return Page(rows[:end], _cursor(state, rows[end - 1]) if more and end else None)
