"""Enqueue jobs: async :class:`Producer`, and :class:`SyncProducer` for WSGI apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread

from streamjobs.codes import Code
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.contract import Wire, check_payload_size
from streamjobs.errors import DuplicateJob, InvalidArgument, raise_for_code
from streamjobs.job import check_job_id, dumps, encode_fields
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import EnqueueItem, EnqueueResult, Scripts, parse_enqueue
from streamjobs.status import JobStatus, job_status
from streamjobs.streams import ensure_types

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import TracebackType

    from redis.asyncio import Redis

#: Jobs per enqueue script call in bulk enqueue (several calls are pipelined).
BULK_CHUNK = 500
#: Script calls per pipeline in bulk enqueue.
PIPELINE_CHUNKS = 10


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`Producer.enqueue_batch`."""

    payload: Any
    job_id: str | None = None
    delay: float | None = None
    run_at: datetime | float | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Producer:
    """Enqueues jobs and reads their status. ``redis`` is a client or a URL."""

    def __init__(self, redis: Redis | str, *, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = client_from_url(redis) if isinstance(redis, str) else redis
        self.scripts = Scripts(self.redis)
        self._known_types: set[str] = set()

    def keys(self, type_: str) -> TypeKeys:
        return TypeKeys(self.settings.prefix, type_)

    async def _ensure_type(self, tk: TypeKeys) -> None:
        if tk.type in self._known_types:
            return
        await ensure_types(self.redis, [tk])
        self._known_types.add(tk.type)

    def _item(self, spec: JobSpec) -> EnqueueItem:
        payload_json = check_payload_size(dumps(spec.payload), self.settings.max_payload_bytes)
        job_id = check_job_id(spec.job_id) if spec.job_id is not None else ""
        fields = encode_fields(
            None, job_id=job_id, max_attempts=spec.max_attempts, timeout=spec.timeout,
            headers=spec.headers, payload_json=payload_json,
        )
        if spec.delay is not None and spec.delay < 0:
            raise InvalidArgument("delay must be >= 0")
        run_at = spec.run_at.timestamp() if isinstance(spec.run_at, datetime) else spec.run_at
        return EnqueueItem(
            fields=fields, job_id=job_id,
            delay_ms=int((spec.delay or 0) * 1000),
            run_at_ms=int(run_at * 1000) if run_at else 0,
        )

    async def enqueue(
        self, type_: str, payload: Any, *, job_id: str | None = None,
        delay: float | None = None, run_at: datetime | float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's own time limit
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Enqueue one job; returns its id. Raises DuplicateJob if ``job_id`` exists.

        ``delay`` is seconds on the server clock; ``run_at`` a datetime or epoch seconds.
        """
        spec = JobSpec(payload, job_id, delay, run_at, max_attempts, timeout, headers or {})
        tk = self.keys(type_)
        item = self._item(spec)
        await self._ensure_type(tk)
        (res,) = await self.scripts.enqueue(tk, [item])
        if res.code is Code.DUPLICATE:
            raise DuplicateJob(res.code, res.job_id, f"it is {res.state}")
        return res.job_id

    async def enqueue_batch(self, type_: str, specs: Sequence[JobSpec]) -> list[EnqueueResult]:
        """Enqueue many jobs in pipelined script calls; one result per job, in order.

        A duplicate id is not enqueued again: its result has ``Code.DUPLICATE``.
        """
        tk = self.keys(type_)
        items = [self._item(s) for s in specs]
        await self._ensure_type(tk)
        results: list[EnqueueResult] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in range(0, len(items), BULK_CHUNK):
                self.scripts.enqueue_in(pipe, tk, items[i : i + BULK_CHUNK])
            for raw in await pipe.execute():
                results += parse_enqueue(raw)
        return results

    async def enqueue_many(self, type_: str, payloads: Iterable[Any]) -> list[str]:
        """Enqueue one job per payload (pipelined); returns their ids in order."""
        tk = self.keys(type_)
        limit = self.settings.max_payload_bytes
        items = [EnqueueItem((Wire.PAYLOAD, check_payload_size(dumps(p), limit)))
                 for p in payloads]
        await self._ensure_type(tk)
        # Pipelines one after another (not concurrently): the stream keeps the jobs in
        # the order given. Each pipeline bounds the memory of one round trip.
        ids: list[str] = []
        per_pipeline = BULK_CHUNK * PIPELINE_CHUNKS
        for i in range(0, len(items), per_pipeline):
            async with self.redis.pipeline(transaction=False) as pipe:
                for j in range(i, min(len(items), i + per_pipeline), BULK_CHUNK):
                    self.scripts.enqueue_in(pipe, tk, items[j : j + BULK_CHUNK])
                for raw in await pipe.execute():
                    ids += [r.job_id for r in parse_enqueue(raw)]
        return ids

    async def status(self, type_: str, job_id: str) -> JobStatus | None:
        """The job's state and record, or None when unknown (or expired)."""
        return await job_status(self.redis, self.keys(type_), job_id)

    async def cancel(self, type_: str, job_id: str) -> str:
        """Cancel a waiting or delayed job; returns the state it had."""
        code, prev = await self.scripts.cancel(
            self.keys(type_), GROUP, job_id, self.settings.result_ttl * 1000
        )
        raise_for_code(code, job_id, prev)
        return prev

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncProducer:
    """A blocking facade over :class:`Producer`, for WSGI apps and scripts.

    It runs an event loop in a background thread; use it as a context manager or call
    :meth:`close`.
    """

    def __init__(self, url: str, *, settings: Settings | None = None) -> None:
        self._cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._cm.__enter__()
        self._producer: Producer = self._portal.call(_make_producer, url, settings)

    def enqueue(self, type_: str, payload: Any, **options: Any) -> str:
        return self._portal.call(lambda: self._producer.enqueue(type_, payload, **options))

    def enqueue_many(self, type_: str, payloads: Iterable[Any]) -> list[str]:
        items = list(payloads)
        return self._portal.call(self._producer.enqueue_many, type_, items)

    def status(self, type_: str, job_id: str) -> JobStatus | None:
        return self._portal.call(self._producer.status, type_, job_id)

    def close(self) -> None:
        self._portal.call(self._producer.aclose)
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_producer(url: str, settings: Settings | None) -> Producer:
    return Producer(url, settings=settings)


