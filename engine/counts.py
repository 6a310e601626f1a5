"""Per-type counts: waiting, running, delayed, dead and the type's counters, in one
pipeline for all types (shared by the CLI, the API and the metrics collector). On a
cluster the pipeline is split per node by the client; the server time is read apart
(no TIME in a cluster pipeline). A reply that is an error other than "no such key yet"
raises: a node that cannot be read is an error, never a zero."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from streamjobs import replies
from streamjobs.contract import TYPE_NAME, Priority, Stat
from streamjobs.keys import GROUP, PARTITIONS_FIELD, TypeKeys, parse_partitions, types_key
from streamjobs.records import Record

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from redis.asyncio import Redis

NORMAL = Priority.NORMAL

log = logging.getLogger("streamjobs")


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
    cancelled: int = 0
    #: Not started by their ``expires_at``.
    expired: int = 0
    #: Enqueues answered by a job of the same ``dedup_key``.
    deduplicated: int = 0
    #: Paused: workers start none of its jobs (``streamjobs pause``).
    paused: bool = False
    #: Waiting for their parents (``after``).
    blocked: int = 0
    #: Waiting jobs of each priority level in use (``high``/``normal``/``low``).
    waiting_by_priority: dict[str, int] = field(default_factory=dict)


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
    paused: bool = False
    #: Partitions the type is spread over (its config; read with partition 0's counts).
    partitions: int = 1
    #: Waiting entries by priority level (set by :func:`fold`).
    by_level: dict[str, int] = field(default_factory=dict)
    blocked: int = 0

    def counter(self, name: Stat) -> int:
        return int(self.counters.get(name.b, 0))


#: Replies :func:`queue_counts` adds to a pipeline per type.
COUNT_REPLIES = 9


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
    pipe.exists(tk.paused)
    pipe.hget(tk.config, PARTITIONS_FIELD)
    pipe.zcard(tk.blocked)


def checked(reply: Any) -> Any:
    """A pipeline reply, or None for "no such key/group yet"; any other error raises."""
    if isinstance(reply, Exception):
        if isinstance(reply, ResponseError) and ("no such key" in str(reply)
                                                 or "NOGROUP" in str(reply)):
            return None
        raise reply
    return reply


def parse_counts(res: Sequence[Any]) -> Counts:
    """Read the replies of :func:`queue_counts` (a missing stream or group counts as 0)."""
    length, pend, delayed, dead, counters, groups, paused, parts, blocked = (
        checked(r) for r in res)
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
        paused=bool(paused),
        partitions=parse_partitions(parts),
        blocked=blocked if isinstance(blocked, int) else 0,
    )


def more_streams(tks: Sequence[TypeKeys], rows: Sequence[Counts]) -> list[TypeKeys]:
    """The other streams of these types: the partitions (after the first) of those whose
    counts say they have some, and every partition's priority levels. Their counts are
    read next, and :func:`fold` adds them up."""
    out: list[TypeKeys] = []
    for tk, c in zip(tks, rows, strict=True):
        if tk.partition == 0:
            parts = tk.partitions(c.partitions)
            out += parts[1:]
            out += [lane for p in parts for lane in p.levels() if lane.level is not NORMAL]
    return out


def fold(tks: Sequence[TypeKeys], rows: Sequence[Counts], ages: Sequence[float]
         ) -> tuple[list[TypeKeys], list[Counts], list[float]]:
    """One row per type: its partitions' counts summed, their oldest waiting age the
    largest (a type shows as one, however many partitions it has)."""
    out: dict[str, tuple[TypeKeys, Counts, float]] = {}
    for tk, c, a in zip(tks, rows, ages, strict=True):
        seen = out.get(tk.type)
        c = replace(c, by_level={tk.level.value: c.waiting} if c.waiting else {})
        if seen is None:
            out[tk.type] = (TypeKeys(tk.prefix, tk.type), c, a)
            continue
        s = seen[1]
        by_level = dict(s.by_level)
        for level, n in c.by_level.items():
            by_level[level] = by_level.get(level, 0) + n
        if tk.level is not NORMAL:  # a level's stream: its entries (the rest is shared)
            out[tk.type] = (seen[0], replace(s, waiting=s.waiting + c.waiting,
                                             running=s.running + c.running,
                                             by_level=by_level), max(seen[2], a))
            continue
        counters = dict(s.counters)
        for name, v in c.counters.items():
            if name != Stat.SEQ.b:
                counters[name] = str(int(counters.get(name, 0)) + int(v)).encode()
        out[tk.type] = (seen[0], Counts(
            s.waiting + c.waiting, s.running + c.running, s.delayed + c.delayed,
            s.dead + c.dead, counters, s.last_delivered, s.paused or c.paused,
            max(s.partitions, c.partitions), by_level, s.blocked + c.blocked,
        ), max(seen[2], a))
    return ([v[0] for v in out.values()], [v[1] for v in out.values()],
            [v[2] for v in out.values()])


def oldest_age(found: Any, now_ms: int) -> float:
    """Age in seconds of the entry an ``XRANGE (last-delivered + COUNT 1`` found."""
    if not isinstance(found, list) or not found:
        return 0.0
    first_ms = int(found[0][0].split(b"-")[0])
    return max(0.0, (now_ms - first_ms) / 1000)


def server_ms(time_reply: Any) -> int:
    sec, usec = time_reply
    return int(sec) * 1000 + int(usec) // 1000


def _stats(tk: TypeKeys, c: Counts, age: float) -> TypeStats:
    return TypeStats(
        type=tk.type, waiting=c.waiting, running=c.running, delayed=c.delayed, dead=c.dead,
        completed=c.counter(Stat.COMPLETED), retried=c.counter(Stat.RETRIED),
        enqueued=c.counter(Stat.ENQUEUED), oldest_waiting_age=age,
        cancelled=c.counter(Stat.CANCELLED), expired=c.counter(Stat.EXPIRED),
        deduplicated=c.counter(Stat.DEDUPLICATED), paused=c.paused,
        waiting_by_priority=c.by_level, blocked=c.blocked,
    )


async def _counts(redis: Redis, tks: Sequence[TypeKeys]) -> list[Counts]:
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            queue_counts(pipe, tk)
        res = await pipe.execute(raise_on_error=False)
    return [parse_counts(res[i * COUNT_REPLIES : (i + 1) * COUNT_REPLIES])
            for i in range(len(tks))]


async def types_stats(redis: Redis, tks: Sequence[TypeKeys]) -> list[TypeStats]:
    """Counts of many types: one pipeline (+1 for the oldest waiting ages, +1 TIME, +1
    for the other partitions of partitioned types), each type's partitions summed."""
    if not tks:
        return []
    rows = await _counts(redis, tks)
    extra = more_streams(tks, rows)
    if extra:
        tks, rows = [*tks, *extra], rows + await _counts(redis, extra)
    now_ms = server_ms(await redis.time())
    todo = [(i, r.last_delivered) for i, r in enumerate(rows) if r.waiting and r.last_delivered]
    ages = [0.0] * len(rows)
    if todo:
        async with redis.pipeline(transaction=False) as pipe:
            for i, last in todo:
                pipe.xrange(tks[i].stream, f"({last}", "+", count=1)
            found = await pipe.execute(raise_on_error=False)
        for (i, _), f in zip(todo, found, strict=True):
            ages[i] = oldest_age(checked(f), now_ms)
    return [_stats(tk, c, a) for tk, c, a in zip(*fold(tks, rows, ages), strict=True)]


async def type_stats(redis: Redis, tk: TypeKeys) -> TypeStats:
    """Counts for one type."""
    return (await types_stats(redis, [tk]))[0]


async def known_types(redis: Redis, prefix: str) -> list[str]:
    """The type names in the types index (sj:types), sorted."""
    key = types_key(prefix)
    return type_names(replies.member_set(await redis.smembers(key)), key)


_SKIPPED: set[bytes] = set()


def type_names(members: Iterable[bytes], index: str) -> list[str]:
    """The members of the types index that are type names, sorted. Anyone may write the
    index (a producer in another language, an operator): a member that is no type name
    is left out, logged once per process, so it breaks no listing."""
    names = []
    for m in members:
        t = m.decode("utf-8", "replace")
        if TYPE_NAME.fullmatch(t):
            names.append(t)
        elif m not in _SKIPPED and len(_SKIPPED) < 1000:
            _SKIPPED.add(m)
            log.warning("the types index %s holds %r, which is no type name: left out of "
                        "every listing (SREM it)", index, m[:100])
    return sorted(names)
