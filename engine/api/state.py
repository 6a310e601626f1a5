"""What the routes share: one client, producer, dead letters and metric registry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram

from streamjobs.collector import QueueCollector, sync_client
from streamjobs.connection import client_from_url
from streamjobs.dead import DeadLetters
from streamjobs.metrics import LATENCY_BUCKETS
from streamjobs.producer import Producer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from streamjobs.config import Settings
    from streamjobs.producer import JobSpec
    from streamjobs.scripts import EnqueueResult

#: Seconds one server call of the API may take before it answers 503.
SOCKET_TIMEOUT = 10.0


@dataclass
class ApiState:
    """What the routes share: one client, producer, dead letters and metric registry."""

    settings: Settings
    redis: Redis
    producer: Producer
    dead: DeadLetters
    registry: CollectorRegistry
    enqueue_seconds: Histogram
    collector: QueueCollector
    owns_client: bool

    async def enqueue(self, type_: str, specs: Sequence[JobSpec]) -> list[EnqueueResult]:
        """Enqueue (pipelined), timing the call in ``streamjobs_enqueue_duration_seconds``."""
        t0 = time.perf_counter()
        try:
            return await self.producer.enqueue_batch(type_, specs)
        finally:
            self.enqueue_seconds.labels(type_).observe(time.perf_counter() - t0)

    async def aclose(self) -> None:
        self.collector.close()
        if self.owns_client:
            await self.redis.aclose()


def make_state(url_or_client: str | Redis, settings: Settings) -> ApiState:
    owns = isinstance(url_or_client, str)
    redis = (client_from_url(url_or_client, socket_timeout=SOCKET_TIMEOUT)
             if isinstance(url_or_client, str) else url_or_client)
    registry = CollectorRegistry()
    collector = QueueCollector(sync_client(url_or_client), settings.prefix)
    registry.register(collector)
    enqueue_seconds = Histogram(
        "streamjobs_enqueue_duration_seconds", "Time to enqueue one request's jobs (API)",
        ["type"], buckets=LATENCY_BUCKETS, registry=registry,
    )
    return ApiState(settings, redis, Producer(redis, settings=settings),
                    DeadLetters(redis, settings=settings), registry, enqueue_seconds,
                    collector, owns)
