"""Throughput per minute, for the dashboard's chart: each type's stats counters
(completed, retried, dead) are snapshotted once per minute into the type's ``minutes``
hash, and the chart is the difference between consecutive snapshots.

The scripts keep only running totals; a snapshot is written by whoever samples (the API
process, every ``SAMPLE_S`` and on each read), first writer of a minute wins (HSETNX),
so several API processes agree. Minutes in which nothing sampled (no API running) share
the difference across the gap evenly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamjobs.contract import Stat
from streamjobs.counts import checked
from streamjobs.keys import PARTITIONS_FIELD, parse_partitions
from streamjobs.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys

#: Counters a snapshot keeps, in this order ("completed retried dead").
COUNTED = (Stat.COMPLETED, Stat.RETRIED, Stat.DEAD)
#: Minutes of snapshots kept per type (the chart shows up to this many).
KEEP_MINUTES = 120
#: Seconds between two samples of the API's background sampler.
SAMPLE_S = 15.0
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Series(Record):
    """One type's jobs per minute: ``completed[i]`` and ``failed[i]`` (failed attempts:
    retried or dead) in the minute starting at ``start_ms + i * 60 s``."""

    type: str
    completed: list[float]
    failed: list[float]


def _totals(raw: Sequence[bytes | None]) -> tuple[int, ...]:
    return tuple(int(v or 0) for v in raw)


async def _read_totals(redis: Redis, tks: Sequence[TypeKeys]) -> list[tuple[int, ...]]:
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            pipe.hmget(tk.stats, [s.value for s in COUNTED])
        res = await pipe.execute(raise_on_error=False)
    return [_totals(checked(r) or [None] * len(COUNTED)) for r in res]


async def with_partitions(redis: Redis, tks: Sequence[TypeKeys]) -> list[TypeKeys]:
    """Every partition of these types (one pipelined read of their configs): a
    partitioned type's counters are kept per partition, and its chart adds them up."""
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            pipe.hget(tk.config, PARTITIONS_FIELD)
        res = await pipe.execute(raise_on_error=False)
    return [p for tk, n in zip(tks, res, strict=True)
            for p in tk.partitions(parse_partitions(checked(n)))]


async def sample(redis: Redis, tks: Sequence[TypeKeys], now_ms: int) -> list[tuple[int, ...]]:
    """Record this minute's snapshot of each type (if none yet); returns the totals now."""
    if not tks:
        return []
    totals = await _read_totals(redis, tks)
    minute = now_ms // MINUTE_MS
    async with redis.pipeline(transaction=False) as pipe:
        for tk, t in zip(tks, totals, strict=True):
            pipe.hsetnx(tk.minutes, str(minute), " ".join(map(str, t)))
            pipe.pexpire(tk.minutes, KEEP_MINUTES * MINUTE_MS)
        await pipe.execute()
    return totals


def _snapshots(raw: dict[bytes, bytes]) -> list[tuple[int, tuple[int, ...]]]:
    out = []
    for k, v in raw.items():
        try:
            out.append((int(k), tuple(int(x) for x in v.split())))
        except ValueError:
            continue  # not ours: skip rather than fail the chart
    return sorted(out)


def _per_minute(points: list[tuple[int, tuple[int, ...]]], first: int,
                minutes: int) -> list[list[float]]:
    """Differences between consecutive snapshots, spread over the minutes between them;
    a counter that went down (the type was deleted and reused) counts from zero."""
    rates = [[0.0] * minutes for _ in COUNTED]
    for (m1, v1), (m2, v2) in zip(points, points[1:], strict=False):
        span = m2 - m1
        for c in range(len(COUNTED)):
            a = v1[c] if c < len(v1) else 0
            b = v2[c] if c < len(v2) else 0
            delta = b - a if b >= a else b
            for m in range(max(m1, first), min(m2, first + minutes)):
                rates[c][m - first] += delta / span
    return rates


async def throughput(redis: Redis, tks: Sequence[TypeKeys], now_ms: int,
                     minutes: int = 60) -> tuple[int, list[Series]]:
    """Jobs per minute over the last ``minutes`` minutes (the current one included, so
    far), per type; returns (start of the first minute in ms, series)."""
    now_minute = now_ms // MINUTE_MS
    first = now_minute - minutes + 1
    tks = await with_partitions(redis, tks)
    totals = await sample(redis, tks, now_ms)
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            pipe.hgetall(tk.minutes)
        raws = await pipe.execute()
    out: dict[str, Series] = {}
    for tk, raw, now_totals in zip(tks, raws, totals, strict=True):
        points = _snapshots(raw)
        stale = [k for k, _ in points if k < now_minute - KEEP_MINUTES]
        if stale:
            await redis.hdel(tk.minutes, *map(str, stale))
        # Now, as the end of the current minute: the minute so far.
        points = [p for p in points if p[0] >= now_minute - KEEP_MINUTES]
        points.append((now_minute + 1, now_totals))
        completed, retried, dead = _per_minute(points, first, minutes)
        failed = [r + d for r, d in zip(retried, dead, strict=True)]
        seen = out.get(tk.type)
        if seen is not None:  # another partition of the type: added up
            completed = [a + b for a, b in zip(seen.completed, completed, strict=True)]
            failed = [a + b for a, b in zip(seen.failed, failed, strict=True)]
        out[tk.type] = Series(tk.type, completed, failed)
    return first * MINUTE_MS, [Series(s.type, [round(x, 2) for x in s.completed],
                                      [round(x, 2) for x in s.failed]) for s in out.values()]
