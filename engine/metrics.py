"""Prometheus metrics at the transition points.

Names are in base units, labels are ``type`` and ``outcome``, never a job id. Every
collector lives on an injected :class:`CollectorRegistry` (a private one by default,
so several workers in one process never collide).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamjobs.about import version
from streamjobs.keys import split_tag

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                   5, 10, 30, 60, 300)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.jobs = Counter("streamjobs_jobs", "Jobs finished by this worker, by outcome",
                            ["type", "outcome"], registry=r)
        self.duration = Histogram("streamjobs_attempt_duration_seconds",
                                  "Wall time of one attempt", ["type", "outcome"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.wait = Histogram("streamjobs_queue_wait_seconds",
                              "Enqueue (or retry) to handler start", ["type"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("streamjobs_jobs_in_flight", "Attempts running now", ["type"],
                               registry=r, multiprocess_mode="livesum")
        self.reclaimed_total = Counter("streamjobs_jobs_reclaimed",
                                       "Entries taken over from dead workers", ["type"],
                                       registry=r)
        self.released_total = Counter("streamjobs_jobs_released",
                                      "Entries handed back at shutdown", ["type"], registry=r)
        self.webhooks = Counter("streamjobs_webhook_deliveries",
                                "Webhook calls made by this worker, by outcome (ok: a 2xx "
                                "answer; failed: any other answer or no answer)",
                                ["outcome"], registry=r)
        self.held_total = Counter("streamjobs_jobs_held",
                                  "Starts held back by a concurrency limit (the job parked, "
                                  "no attempt spent)", ["type"], registry=r)
        self._types: dict[str, tuple[Any, Any]] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self.last_heartbeat = Gauge("streamjobs_worker_heartbeat_timestamp_seconds",
                                    "Last heartbeat written", registry=r,
                                    multiprocess_mode="max")
        self.info = Gauge("streamjobs_worker_info",
                          "Worker processes running, by engine version (1 per process)",
                          ["version"], registry=r, multiprocess_mode="livesum")
        self.slots = Gauge("streamjobs_worker_concurrency",
                           "Job slots (concurrency) of live worker processes, per type",
                           ["type"], registry=r, multiprocess_mode="livesum")

    def describe(self, types: list[str], concurrency: int) -> None:
        """Publish what this worker process is: version, and its slots per type."""
        self.info.labels(version()).set(1)
        for t in types:
            self.slots.labels(_type(t)).set(concurrency)

    def started(self, type_: str, enqueued_at_ms: int | None) -> None:
        children = self._per_type(type_)
        children[0].inc()
        if enqueued_at_ms:
            children[1].observe(max(0.0, time.time() - enqueued_at_ms / 1000))

    def finished(self, type_: str, kind: str, seconds: float) -> None:
        self._per_type(type_)[0].dec()
        key = (type_, kind)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.duration.labels(_type(type_), kind)
        child.observe(seconds)

    def _per_type(self, type_: str) -> tuple[Any, Any]:
        # labels() costs a lock and a dict build per call: cache the children (hot path).
        children = self._types.get(type_)
        if children is None:
            children = self._types[type_] = (self.in_flight.labels(_type(type_)),
                                             self.wait.labels(_type(type_)))
        return children

    def outcome(self, type_: str, outcome: str, n: int = 1) -> None:
        if n:
            self.jobs.labels(_type(type_), outcome).inc(n)

    def reclaimed(self, type_: str, n: int) -> None:
        self.reclaimed_total.labels(_type(type_)).inc(n)

    def released(self, type_: str, n: int) -> None:
        if n:
            self.released_total.labels(_type(type_)).inc(n)

    def webhook(self, *, ok: bool) -> None:
        self.webhooks.labels("ok" if ok else "failed").inc()

    def held(self, type_: str) -> None:
        self.held_total.labels(_type(type_)).inc()

    def heartbeat(self) -> None:
        self.last_heartbeat.set(time.time())


def _type(tag: str) -> str:
    """The ``type`` label of a type or of one of its partitions (``T#1`` counts as T)."""
    return split_tag(tag)[0]
