"""Queue figures read from the server at scrape time: the numbers an autoscaler needs.

:class:`QueueCollector` is a custom Prometheus collector. Its ``collect()`` is sync (the
Prometheus client calls it from the exposition code), so it reads with a sync redis-py
client bounded by a short socket timeout, in three pipelined round trips whatever the
number of types. When the server cannot be read it reports ``streamjobs_scrape_error 1``
and no queue figures instead of raising, so the scrape itself still succeeds.

Per type (label ``type``):

- ``streamjobs_queue_waiting``: entries in the stream not yet delivered
- ``streamjobs_queue_running``: delivered, not finished (the group's pending list)
- ``streamjobs_queue_delayed``: scheduled or waiting out a backoff
- ``streamjobs_queue_dead``: in the dead stream
- ``streamjobs_queue_oldest_waiting_age_seconds``: age of the oldest undelivered entry
- ``streamjobs_queue_{enqueued,completed,retried,dead_lettered,cancelled,expired,
  deduplicated}_total``: the type's counters
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from streamjobs import replies
from streamjobs.connection import SyncClient, sync_client_from_url, sync_client_like
from streamjobs.contract import JobState, Priority, Stat
from streamjobs.counts import (
    COUNT_REPLIES,
    Counts,
    checked,
    fold,
    more_streams,
    oldest_age,
    parse_counts,
    queue_counts,
    server_ms,
    type_names,
)
from streamjobs.keys import TypeKeys, types_key

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric
    from redis.asyncio import Redis as AsyncRedis

log = logging.getLogger("streamjobs.collector")

#: Seconds a scrape may wait on the server (connect and each read).
SCRAPE_TIMEOUT = 2.0

_GAUGES = {
    JobState.WAITING: "Jobs in the stream not yet delivered to a worker",
    JobState.RUNNING: "Jobs delivered to a worker and not finished (consumer group pending list)",
    JobState.DELAYED: "Jobs scheduled for later or waiting out a retry backoff",
    JobState.DEAD: "Jobs in the dead stream",
    JobState.BLOCKED: "Jobs waiting for their parents to end (after=)",
}
#: counter name → field of the type's stats hash
_COUNTERS = {
    "enqueued": (Stat.ENQUEUED, "Jobs enqueued"),
    "completed": (Stat.COMPLETED, "Jobs completed"),
    "retried": (Stat.RETRIED, "Failed attempts that were retried"),
    "dead_lettered": (Stat.DEAD, "Jobs moved to the dead stream"),
    "cancelled": (Stat.CANCELLED, "Jobs cancelled (waiting, delayed or running)"),
    "expired": (Stat.EXPIRED, "Jobs not started by their expires_at"),
    "deduplicated": (Stat.DEDUPLICATED, "Enqueues answered by a job of the same dedup_key"),
    "cron_ticks": (Stat.CRON_TICKS, "Cron ticks enqueued (each exactly once)"),
}


def sync_client(target: str | AsyncRedis, timeout: float = SCRAPE_TIMEOUT) -> SyncClient:
    """A sync client for a URL (any form), or for the server(s) an asyncio client talks to."""
    if isinstance(target, str):
        return sync_client_from_url(target, timeout)
    return sync_client_like(target, timeout)


class QueueCollector(Collector):
    """Reads every known type's queue figures when Prometheus scrapes."""

    def __init__(self, client: SyncClient, prefix: str = "sj") -> None:
        self.client = client
        self.prefix = prefix

    def describe(self) -> list[Metric]:
        # Nothing to declare up front: registering must not call the server.
        return []

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        try:
            families = self._read()
            failed = 0.0
        except (RedisError, OSError) as e:
            log.warning("scrape of queue figures failed: %s", e)
            families, failed = [], 1.0
        yield from families
        yield GaugeMetricFamily(
            "streamjobs_scrape_error",
            "1 when the queue figures could not be read from the server at this scrape",
            value=failed,
        )
        yield GaugeMetricFamily(
            "streamjobs_scrape_duration_seconds",
            "Time spent reading the queue figures from the server", value=time.perf_counter() - t0,
        )

    def close(self) -> None:
        self.client.close()
        if isinstance(self.client, redis.Redis):
            self.client.connection_pool.disconnect()

    # ---- reading -----------------------------------------------------------------------

    def _read(self) -> list[Metric]:
        index = types_key(self.prefix)
        types = type_names(replies.member_set(self.client.smembers(index)), index)
        keys = [TypeKeys(self.prefix, t) for t in types]
        # One pipeline; a cluster client splits it per node. TIME is not allowed in a
        # cluster pipeline: read apart.
        rows = self._counts(keys)
        extra = more_streams(keys, rows)  # the other partitions and the priority levels
        if extra:
            keys, rows = [*keys, *extra], rows + self._counts(extra)
        ages = self._ages(keys, rows, server_ms(self.client.time()))
        keys, rows, ages = fold(keys, rows, ages)
        return _families([tk.type for tk in keys], rows, ages)

    def _counts(self, keys: Sequence[TypeKeys]) -> list[Counts]:
        pipe = self.client.pipeline(transaction=False)
        for tk in keys:
            queue_counts(pipe, tk)
        res = pipe.execute(raise_on_error=False)
        return [parse_counts(res[i * COUNT_REPLIES : (i + 1) * COUNT_REPLIES])
                for i in range(len(keys))]

    def _ages(self, keys: Sequence[TypeKeys], rows: Sequence[Counts], now_ms: int) -> list[float]:
        """Oldest waiting age of each type: one pipelined XRANGE after the last delivered."""
        todo = [(i, r.last_delivered) for i, r in enumerate(rows)
                if r.waiting > 0 and r.last_delivered]
        ages = [0.0] * len(rows)
        if not todo:
            return ages
        pipe = self.client.pipeline(transaction=False)
        for i, last in todo:
            pipe.xrange(keys[i].stream, f"({last}", "+", count=1)
        for (i, _), found in zip(todo, pipe.execute(raise_on_error=False), strict=True):
            ages[i] = oldest_age(checked(found), now_ms)
        return ages


def _families(types: Sequence[str], rows: Sequence[Counts],
              ages: Sequence[float]) -> list[Metric]:
    out: list[Metric] = []
    for state, doc in _GAUGES.items():
        g = GaugeMetricFamily(f"streamjobs_queue_{state}", doc, labels=["type"])
        for t, row in zip(types, rows, strict=True):
            g.add_metric([t], getattr(row, state))
        out.append(g)
    age = GaugeMetricFamily("streamjobs_queue_oldest_waiting_age_seconds",
                            "Age of the oldest job not yet delivered (0 when none)",
                            labels=["type"])
    for t, a in zip(types, ages, strict=True):
        age.add_metric([t], a)
    out.append(age)
    levels = GaugeMetricFamily("streamjobs_queue_waiting_by_priority",
                               "Jobs waiting, by priority level (high, normal, low)",
                               labels=["type", "priority"])
    for t, row in zip(types, rows, strict=True):
        for level in Priority:
            levels.add_metric([t, level.value], row.by_level.get(level.value, 0))
    out.append(levels)
    paused = GaugeMetricFamily("streamjobs_type_paused",
                               "1 while the type is paused (workers start none of its jobs)",
                               labels=["type"])
    for t, row in zip(types, rows, strict=True):
        paused.add_metric([t], 1.0 if row.paused else 0.0)
    out.append(paused)
    for name, (field, doc) in _COUNTERS.items():
        c = CounterMetricFamily(f"streamjobs_queue_{name}", doc, labels=["type"])
        for t, row in zip(types, rows, strict=True):
            c.add_metric([t], row.counter(field))
        out.append(c)
    return out
