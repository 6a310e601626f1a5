"""Cron and interval schedules: data on the server, ticks enqueued exactly once.

A schedule of type T lives under T's hash tag: its definition in ``TypeKeys.schedules``
(name -> JSON), its next run in ``TypeKeys.schedule_due`` (name -> server ms; absent while
paused), its last run in ``TypeKeys.schedule_runs``. Every worker runs
:func:`run_scheduler` for its types; Lua cannot evaluate cron, so the worker computes the
tick and the next run here and ``schedule_tick.lua`` enqueues the tick only if the stored
next run is still the one the worker read (compare-and-advance): one job per tick, with the
id ``cron:<name>:<tick-ms>``, however many workers race for it.

Downtime policy: when no scheduler ran for a while, the missed ticks are skipped except the
latest one, which runs once (a job with that tick's id); the next run is the first tick
after the server's now.

Cron expressions have 5 fields, or 6 with the seconds first (``*/5 * * * * *``: every 5
seconds), read by croniter in the schedule's time zone (``tz``, an IANA name; UTC by
default). ``every`` is an interval in seconds (at least 1): ticks fall on multiples of it
since the epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import orjson
from croniter import croniter

from streamjobs import replies
from streamjobs.codes import Code
from streamjobs.contract import TYPE_NAME
from streamjobs.counts import known_types, server_ms
from streamjobs.errors import ConfigError, InvalidArgument
from streamjobs.job import NO_FLOW, Flow, dumps, encode_fields
from streamjobs.keys import TypeKeys
from streamjobs.reconnect import SERVER_ERRORS, Backoff
from streamjobs.records import Record
from streamjobs.scripts import EnqueueItem
from streamjobs.streams import ensure_types

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from streamjobs.scripts import Scripts

log = logging.getLogger("streamjobs.schedules")

#: Longest sleep of the scheduling loop: a schedule added or resumed is seen this soon.
POLL_S = 0.25
#: Job-option fields a definition may carry (the job's own options, as enqueue takes them).
_OPTIONS = ("max_attempts", "timeout", "headers")


@dataclass(frozen=True, slots=True)
class Schedule(Record):
    """One schedule; ``last_run_ms``/``next_run_ms`` are server ms (None: never / paused)."""

    name: str
    type: str
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    payload: Any = None
    max_attempts: int | None = None
    timeout: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    #: The ticks' priority level (``contract.Priority``; None: normal).
    priority: str | None = None
    last_run_ms: int | None = None
    next_run_ms: int | None = None

    def check(self) -> Schedule:
        """Raise InvalidArgument unless the schedule can run; return it."""
        if not isinstance(self.name, str) or not TYPE_NAME.fullmatch(self.name):
            raise InvalidArgument(f"invalid schedule name {self.name!r}: use 1-64 characters "
                                  "from A-Z a-z 0-9 _ . -")
        TypeKeys("sj", self.type)
        if (self.cron is None) == (self.every is None):
            raise InvalidArgument("give a schedule either cron= or every=, not both")
        if self.every is not None and not self.every >= 1:
            raise InvalidArgument("every= is at least 1 second")
        if self.cron is not None and (
                len(self.cron.split()) not in (5, 6)
                or not croniter.is_valid(self.cron, second_at_beginning=True)):
            raise InvalidArgument(f"invalid cron expression {self.cron!r} (5 fields, or 6 "
                                  "with the seconds first)")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InvalidArgument(f"unknown time zone {self.tz!r}") from e
        self.job_fields()
        return self

    def definition(self) -> bytes:
        """What is stored: everything but the name, the type and the run times."""
        return dumps({"cron": self.cron, "every": self.every, "tz": self.tz,
                      "payload": self.payload, "max_attempts": self.max_attempts,
                      "timeout": self.timeout, "headers": self.headers,
                      "paused": self.paused, "priority": self.priority})

    def job_fields(self) -> list[bytes | str]:
        """The tick's job fields (its id is added by the script)."""
        return encode_fields(self.payload, max_attempts=self.max_attempts,
                             timeout=self.timeout, headers=self.headers,
                             flow=Flow(priority=self.priority) if self.priority else NO_FLOW)

    def ticks(self, now_ms: int) -> tuple[int, int]:
        """The latest tick at or before ``now_ms`` and the first one after it."""
        if self.every is not None:
            iv = int(self.every * 1000)
            latest = now_ms - now_ms % iv
            return latest, latest + iv
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        now = datetime.fromtimestamp(now_ms / 1000, zone)
        nxt = croniter(self.cron, now, second_at_beginning=True).get_next(datetime)
        prev = croniter(self.cron, nxt, second_at_beginning=True).get_prev(datetime)
        return int(prev.timestamp() * 1000), int(nxt.timestamp() * 1000)


def _load(name: str, type_: str, raw: bytes | str, next_ms: Any, last: Any) -> Schedule:
    d = orjson.loads(raw)
    return Schedule(
        name=name, type=type_, cron=d.get("cron"), every=d.get("every"),
        tz=d.get("tz") or "UTC", payload=d.get("payload"),
        max_attempts=d.get("max_attempts"), timeout=d.get("timeout"),
        headers=d.get("headers") or {}, paused=bool(d.get("paused")),
        priority=d.get("priority"),
        last_run_ms=int(last) if last is not None else None,
        next_run_ms=int(next_ms) if next_ms is not None else None,
    )


async def upsert(redis: Redis, prefix: str, s: Schedule, *, declared: bool = False
                 ) -> Schedule:
    """Create or replace a schedule. An unchanged definition keeps its next run (so the
    upsert every worker makes at start moves nothing); a changed one runs next at its
    first tick after now. A name belongs to one type: another type's raises.
    ``declared`` (a worker's upsert of a schedule declared in code) keeps the paused state
    an operator set: a restart does not resume a paused schedule."""
    s.check()
    tk = TypeKeys(prefix, s.type)
    for other in await known_types(redis, prefix):
        if other != s.type and await redis.hexists(TypeKeys(prefix, other).schedules, s.name):
            raise InvalidArgument(f"schedule {s.name!r} belongs to type {other!r}")
    await ensure_types(redis, [tk])
    old = await redis.hget(tk.schedules, s.name)
    if declared and old is not None:
        s = _with(s, paused=bool(orjson.loads(old).get("paused")))
    definition = s.definition()
    _, nxt = s.ticks(server_ms(await redis.time()))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(tk.schedules, s.name, definition)
        if s.paused:
            pipe.zrem(tk.schedule_due, s.name)
        else:
            pipe.zadd(tk.schedule_due, {s.name: nxt}, nx=old == definition)
        await pipe.execute()
    found = await get(redis, prefix, s.name)
    assert found is not None
    return found


async def _find(redis: Redis, prefix: str, name: str) -> TypeKeys | None:
    for t in await known_types(redis, prefix):
        tk = TypeKeys(prefix, t)
        if await redis.hexists(tk.schedules, name):
            return tk
    return None


async def get(redis: Redis, prefix: str, name: str) -> Schedule | None:
    tk = await _find(redis, prefix, name)
    if tk is None:
        return None
    found = await of_types(redis, [tk], name)
    return found[0] if found else None


async def of_types(redis: Redis, tks: Sequence[TypeKeys], only: str | None = None
                   ) -> list[Schedule]:
    """The schedules of these types (or the one named ``only``), sorted by name."""
    out: list[Schedule] = []
    for tk in tks:
        defs = replies.hash_fields(await redis.hgetall(tk.schedules))
        if only is not None:
            defs = {k: v for k, v in defs.items() if k == only.encode()}
        if not defs:
            continue
        names = list(defs)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zmscore(tk.schedule_due, names)  # type: ignore[arg-type]  # bytes are keys
            pipe.hmget(tk.schedule_runs, names)
            due, runs = await pipe.execute()
        out += [_load(n.decode(), tk.type, defs[n], d, r)
                for n, d, r in zip(names, due, runs, strict=True)]
    return sorted(out, key=lambda s: s.name)


async def all_schedules(redis: Redis, prefix: str) -> list[Schedule]:
    """Every schedule, found through the known types."""
    return await of_types(redis, [TypeKeys(prefix, t) for t in await known_types(redis, prefix)])


async def remove(redis: Redis, prefix: str, name: str) -> bool:
    """Delete a schedule (jobs it enqueued stay); False when there was none."""
    tk = await _find(redis, prefix, name)
    if tk is None:
        return False
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hdel(tk.schedules, name)
        pipe.zrem(tk.schedule_due, name)
        pipe.hdel(tk.schedule_runs, name)
        await pipe.execute()
    return True


async def set_paused(redis: Redis, prefix: str, name: str, paused: bool) -> Schedule | None:
    """Pause (no ticks) or resume (next run: the first tick after now) a schedule."""
    s = await get(redis, prefix, name)
    if s is None:
        return None
    if s.paused == paused:
        return s
    return await upsert(redis, prefix, _with(s, paused=paused))


def _with(s: Schedule, **changes: Any) -> Schedule:
    d = {k: getattr(s, k) for k in s.__dataclass_fields__}
    d.update(changes)
    return Schedule(**d)


async def run_now(redis: Redis, scripts: Scripts, prefix: str, name: str) -> str | None:
    """Enqueue the schedule's job now, apart from its ticks (id ``cron:<name>:now-<ms>``);
    None when there is no such schedule."""
    s = await get(redis, prefix, name)
    if s is None:
        return None
    job_id = f"cron:{name}:now-{server_ms(await redis.time())}"
    (res,) = await scripts.enqueue(TypeKeys(prefix, s.type),
                                   [EnqueueItem(s.job_fields(), job_id)])
    return res.job_id


async def tick_once(redis: Redis, scripts: Scripts, tks: Sequence[TypeKeys]) -> float:
    """Enqueue every due tick of these types; return seconds until the next one is due
    (at most :data:`POLL_S`). Two reads per type when nothing is due."""
    now = server_ms(await redis.time())
    wait = POLL_S
    for tk in tks:
        due = replies.scored(await redis.zrangebyscore(tk.schedule_due, "-inf", now,
                                                       withscores=True))
        for raw, score in due:
            definition = await redis.hget(tk.schedules, raw)
            if definition is None:  # removed meanwhile
                continue
            s = _load(raw.decode(), tk.type, definition, None, None)
            expected = int(score)
            latest, nxt = s.ticks(now)
            code, job_id = await scripts.schedule_tick(
                tk, s.name, expected, max(latest, expected), nxt, s.job_fields())
            if code is Code.OK:
                log.info("schedule %s: enqueued %s", s.name, job_id)
        first = replies.scored(await redis.zrange(tk.schedule_due, 0, 0, withscores=True))
        if first:
            wait = min(wait, max(0.0, (first[0][1] - now) / 1000))
    return wait


async def run_scheduler(redis: Redis, scripts: Scripts, tks: Sequence[TypeKeys]) -> None:
    """The scheduling loop of a worker (any number of them may run it)."""
    backoff = Backoff()
    while True:
        try:
            wait = await tick_once(redis, scripts, tks)
            backoff.reset()
        except SERVER_ERRORS as e:
            await backoff.wait("scheduling failed", e)
            continue
        except (ConfigError, ValueError) as e:  # a definition written by hand, unreadable
            log.error("a schedule cannot run: %s", e)
            wait = POLL_S
        await anyio.sleep(max(wait, 0.005))
