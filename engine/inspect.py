"""Read-only queries: a job's status, per-type counts. No transitions here.

``running`` is not written by any script: delivery itself (XREADGROUP) is the
transition, and the consumer group's pending list is its record. A job whose record
says ``waiting`` and whose entry is pending is reported as running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from engine.job import JobState
from engine.keys import GROUP, TypeKeys

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class JobStatus:
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

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["state"] = self.state.value
        return d


def _txt(v: bytes | None) -> str | None:
    return v.decode("utf-8", "replace") if v is not None and v != b"" else None


def _int(v: bytes | None) -> int | None:
    try:
        return int(v) if v not in (None, b"") else None  # type: ignore[arg-type]
    except ValueError:
        return None


def _json(v: bytes | None) -> Any:
    if v in (None, b""):
        return None
    try:
        return orjson.loads(v)  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        return v.decode("utf-8", "replace")  # type: ignore[union-attr]


def split_fields(fields: dict[bytes, bytes], prefix: bytes = b"") -> tuple[Any, dict[str, str]]:
    """(payload, headers) from job fields, optionally stored under a name prefix."""
    from engine.job import RESERVED

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
    rows = await redis.xrange(stream, entry_id, entry_id)
    return dict(rows[0][1]) if rows else {}


async def _pending_info(redis: Redis, tk: TypeKeys, entry_id: str) -> tuple[str, int] | None:
    rows = await redis.xpending_range(tk.stream, GROUP, entry_id, entry_id, 1)
    if not rows:
        return None
    row = rows[0]
    return _txt(row["consumer"]) or "", int(row["times_delivered"])


async def job_status(redis: Redis, tk: TypeKeys, job_id: str) -> JobStatus | None:
    rec: dict[bytes, bytes] = await redis.hgetall(tk.job(job_id))
    if not rec:
        return await _status_without_record(redis, tk, job_id)
    state = JobState(rec[b"state"].decode())
    entry_id = _txt(rec.get(b"entry"))
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
        max_attempts=_int(rec.get(b"max_attempts")),
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
class TypeStats:
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

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


async def type_stats(redis: Redis, tk: TypeKeys) -> TypeStats:
    """Counts for one type in one round trip (+1 for the oldest waiting age)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(tk.stream)
        pipe.xpending(tk.stream, GROUP)
        pipe.zcard(tk.delayed)
        pipe.xlen(tk.dead)
        pipe.hgetall(tk.stats)
        pipe.xinfo_groups(tk.stream)
        pipe.time()
        res = await pipe.execute(raise_on_error=False)
    length, pend, delayed, dead, counters, groups, now = res
    length = length if isinstance(length, int) else 0
    running = pend["pending"] if isinstance(pend, dict) else 0
    counters = counters if isinstance(counters, dict) else {}
    age = 0.0
    if isinstance(groups, list) and length > running:
        age = await _oldest_waiting_age(redis, tk, groups, now)
    return TypeStats(
        type=tk.type, waiting=max(0, length - running), running=running,
        delayed=delayed if isinstance(delayed, int) else 0,
        dead=dead if isinstance(dead, int) else 0,
        completed=int(counters.get(b"completed", 0)),
        retried=int(counters.get(b"retried", 0)),
        enqueued=int(counters.get(b"enqueued", 0)),
        oldest_waiting_age=age,
    )


async def _oldest_waiting_age(
    redis: Redis, tk: TypeKeys, groups: list[dict[str, Any]], now: tuple[int, int]
) -> float:
    group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
    if group is None:
        return 0.0
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    rows = await redis.xrange(tk.stream, f"({last}", "+", count=1)
    if not rows:
        return 0.0
    first_ms = int(rows[0][0].split(b"-")[0])
    now_ms = now[0] * 1000 + now[1] // 1000
    return max(0.0, (now_ms - first_ms) / 1000)


async def known_types(redis: Redis, prefix: str) -> list[str]:
    from engine.keys import types_key

    return sorted(m.decode() for m in await redis.smembers(types_key(prefix)))
