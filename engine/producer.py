"""Enqueue jobs: async :class:`Producer`, and :class:`SyncProducer` for WSGI apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread

from streamjobs.codes import Code
from streamjobs.config import Settings
from streamjobs.connection import client_from_url, cluster_of, is_cluster, node_client
from streamjobs.contract import Wire, check_payload_size
from streamjobs.errors import DuplicateJob, InvalidArgument, NotDurable, raise_for_code
from streamjobs.failover import until_deadline
from streamjobs.job import check_job_id, dumps, encode_fields, new_job_ids, new_token
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.results import await_result
from streamjobs.scripts import EnqueueItem, EnqueueResult, Scripts, parse_enqueue
from streamjobs.status import JobStatus, find_entry, job_status
from streamjobs.streams import ensure_types

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import TracebackType

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

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


def wait_command(level: str, timeout_s: float) -> tuple[str | int, ...] | None:
    """The command that confirms ``level`` for the writes before it on one connection."""
    ms = max(1, int(timeout_s * 1000))
    return {"none": None, "aof": ("WAITAOF", 1, 0, ms), "replica": ("WAIT", 1, ms)}[level]


def check_durable(level: str, reply: Any, timeout_s: float, ids: list[str]) -> None:
    """Raise NotDurable unless the reply to :func:`wait_command` confirms ``level``."""
    if isinstance(reply, Exception):
        text = str(reply)
        if "unknown command" in text.lower():
            why = "the server has no WAITAOF (Redis or Valkey 7.2 or later is needed)"
        elif "appendonly" in text.lower():
            why = "the server has AOF off (appendonly no): turn it on, or use durability=replica"
        else:
            why = f"the server refused ({text})"
        raise NotDurable(f"jobs written but not confirmed durable ({level}): {why}", ids)
    confirmed = int(reply[0]) >= 1 if level == "aof" else int(reply) >= 1
    if not confirmed:
        what = "fsynced to the AOF" if level == "aof" else "acknowledged by a replica"
        raise NotDurable(f"jobs written but not {what} within {timeout_s:g}s (is a replica "
                         "connected and in sync?)" if level == "replica" else
                         f"jobs written but not {what} within {timeout_s:g}s", ids)


class Producer:
    """Enqueues jobs and reads their status. ``redis`` is a client (a cluster client
    too) or a URL of any form (see streamjobs.connection).

    Enqueue retries through a failover or a lost connection until
    ``settings.enqueue_deadline``, then raises ServerUnavailable. ``durable`` (or
    ``settings.durability``) makes it return only once the server confirms the jobs are
    fsynced (``aof``) or on a replica (``replica``); NotDurable when it cannot.
    """

    def __init__(self, redis: Redis | RedisCluster | str, *,
                 settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = client_from_url(redis) if isinstance(redis, str) else cast(
            "Redis", redis)
        self.scripts = Scripts(self.redis)
        self._known_types: set[str] = set()
        #: A plain client per cluster node, for a script pipeline and its WAIT on one
        #: connection.
        self._nodes: dict[str, Redis] = {}

    def _level(self, durable: bool | str | None) -> str:
        if durable is None or durable is False:
            return self.settings.durability if durable is None else "none"
        if durable is True:
            return self.settings.durability if self.settings.durability != "none" else "aof"
        if durable not in ("none", "aof", "replica"):
            raise InvalidArgument(f"durable must be True, False, 'none', 'aof' or 'replica', "
                                  f"not {durable!r}")
        return durable

    async def _write(self, tk: TypeKeys, chunks: Sequence[Sequence[EnqueueItem]],
                     level: str) -> list[EnqueueResult]:
        """One attempt: the chunks' script calls in order, then the durability wait on the
        same connection (WAIT counts the writes of the connection it is sent on)."""
        await self._ensure_type(tk)
        wait = wait_command(level, self.settings.durability_timeout)
        if wait is None and (len(chunks) == 1 or is_cluster(self.redis)):
            # One chunk: a plain call (a pipeline of scripts asks SCRIPT EXISTS first).
            # No script calls in a cluster pipeline: one call per chunk (all one slot).
            out: list[EnqueueResult] = []
            for chunk in chunks:
                out += await self.scripts.enqueue(tk, chunk)
            return out
        client = self._node(tk) if is_cluster(self.redis) else self.redis
        async with client.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                self.scripts.enqueue_in(pipe, tk, chunk)
            if wait is not None:
                pipe.execute_command(*wait)
            replies = await pipe.execute(raise_on_error=False)
        results: list[EnqueueResult] = []
        for raw in replies[: len(chunks)]:
            if isinstance(raw, Exception):
                raise raw
            results += parse_enqueue(raw)
        if wait is not None:
            check_durable(level, replies[-1], self.settings.durability_timeout,
                          [r.job_id for r in results])
        return results

    def _node(self, tk: TypeKeys) -> Redis:
        cluster = cluster_of(self.redis)
        node = cluster.get_node_from_key(tk.stream)
        if node is None:
            raise NotDurable(f"no node serves type {tk.type!r} now", [])
        if node.name not in self._nodes:
            self._nodes[node.name] = node_client(node)
        return self._nodes[node.name]

    async def _enqueue(self, tk: TypeKeys, chunks: Sequence[Sequence[EnqueueItem]],
                       durable: bool | str | None) -> list[EnqueueResult]:
        """Write with retries through a failover, until ``settings.enqueue_deadline``.

        A retry after an unknown outcome (here, or redis-py's own after a lost reply)
        writes the chunks again: every job has its id made on the client before the first
        try, and a caller-given id a per-call token, so a job that had landed comes back
        as DUPLICATE of itself and is reported as enqueued once (``_replays_are_ours``).
        """
        level = self._level(durable)
        attempts = 0

        async def attempt() -> list[EnqueueResult]:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and is_cluster(self.redis):
                await cluster_of(self.redis).initialize()  # the node map after a failover
            return await self._write(tk, chunks, level)

        results = await until_deadline(f"enqueue {tk.type}", attempt,
                                       self.settings.enqueue_deadline)
        return _replays_are_ours([it for chunk in chunks for it in chunk], results)

    def keys(self, type_: str) -> TypeKeys:
        return TypeKeys(self.settings.prefix, type_)

    async def _ensure_type(self, tk: TypeKeys) -> None:
        if tk.type in self._known_types:
            return
        await ensure_types(self.redis, [tk])
        self._known_types.add(tk.type)

    def _item(self, spec: JobSpec, generated_id: str) -> EnqueueItem:
        """The job as the script takes it: with the caller's id and a token marking this
        call (so a replay of it is recognised), else with ``generated_id``."""
        payload_json = check_payload_size(dumps(spec.payload), self.settings.max_payload_bytes)
        token = ""
        if spec.job_id is not None:
            job_id, token = check_job_id(spec.job_id), new_token()
        else:
            job_id = generated_id
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
            run_at_ms=int(run_at * 1000) if run_at else 0, token=token,
        )

    async def enqueue(
        self, type_: str, payload: Any, *, job_id: str | None = None,
        delay: float | None = None, run_at: datetime | float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's own time limit
        headers: Mapping[str, str] | None = None,
        durable: bool | str | None = None,
    ) -> str:
        """Enqueue one job; returns its id. Raises DuplicateJob if ``job_id`` exists.

        ``delay`` is seconds on the server clock; ``run_at`` a datetime or epoch seconds.
        ``durable``: None follows ``settings.durability``; True waits for the configured
        level (``aof`` when none is); or name the level (``"aof"``, ``"replica"``).
        The id is made here when not given, before the call is sent, so a replay of the
        call (its reply lost) is the same job, reported once.
        """
        spec = JobSpec(payload, job_id, delay, run_at, max_attempts, timeout, headers or {})
        tk = self.keys(type_)
        item = self._item(spec, new_job_ids(1)[0])
        (res,) = await self._enqueue(tk, [[item]], durable)
        if res.code is Code.DUPLICATE:
            raise DuplicateJob(res.code, res.job_id, f"it is {res.state}")
        return res.job_id

    async def enqueue_batch(self, type_: str, specs: Sequence[JobSpec], *,
                            durable: bool | str | None = None) -> list[EnqueueResult]:
        """Enqueue many jobs in pipelined script calls; one result per job, in order.

        A duplicate id is not enqueued again: its result has ``Code.DUPLICATE``.
        """
        tk = self.keys(type_)
        items = [self._item(s, i) for s, i in zip(specs, new_job_ids(len(specs)), strict=True)]
        return await self._enqueue(tk, _chunks(items, BULK_CHUNK), durable)

    async def enqueue_many(self, type_: str, payloads: Iterable[Any], *,
                           durable: bool | str | None = None) -> list[str]:
        """Enqueue one job per payload (pipelined); returns their ids in order."""
        tk = self.keys(type_)
        limit = self.settings.max_payload_bytes
        bodies = [check_payload_size(dumps(p), limit) for p in payloads]
        items = [EnqueueItem((Wire.PAYLOAD, body), job_id)
                 for body, job_id in zip(bodies, new_job_ids(len(bodies)), strict=True)]
        # Pipelines one after another (not concurrently): the stream keeps the jobs in
        # the order given. Each pipeline bounds the memory of one round trip.
        ids: list[str] = []
        chunks = _chunks(items, BULK_CHUNK)
        for i in range(0, len(chunks), PIPELINE_CHUNKS):
            done = await self._enqueue(tk, chunks[i : i + PIPELINE_CHUNKS], durable)
            ids += [r.job_id for r in done]
        return ids

    async def status(self, type_: str, job_id: str) -> JobStatus | None:
        """The job's state and record, or None when unknown (or expired)."""
        return await job_status(self.redis, self.keys(type_), job_id)

    async def result(self, type_: str, job_id: str,
                     timeout: float = 30.0) -> Any:  # noqa: ASYNC109 - the wait's limit
        """The job's result once it completes (a blocking read on the type's events, no
        polling). Raises JobFailed for a dead job, JobCancelled, ResultTimeout."""
        return await await_result(self.redis, self.keys(type_), job_id, timeout)

    async def cancel(self, type_: str, job_id: str) -> str:
        """Cancel a waiting or delayed job; returns the state it had."""
        tk, ttl = self.keys(type_), self.settings.result_ttl * 1000
        code, prev = await self.scripts.cancel(tk, GROUP, job_id, ttl)
        if code is Code.NOT_FOUND:  # a plain XADD's job has no record until it moves
            found = await find_entry(self.redis, tk, job_id)
            if found is not None:
                code, prev = await self.scripts.cancel(tk, GROUP, job_id, ttl, found[0])
        raise_for_code(code, job_id, prev)
        return prev

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()
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

    def result(self, type_: str, job_id: str, timeout: float = 30.0) -> Any:
        return self._portal.call(self._producer.result, type_, job_id, timeout)

    def close(self) -> None:
        self._portal.call(self._producer.aclose)
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replays_are_ours(items: Sequence[EnqueueItem],
                      results: list[EnqueueResult]) -> list[EnqueueResult]:
    """DUPLICATE for an id made by this producer (no token) is a replay of this very call
    after a lost reply: the job is ours, enqueued once. (A caller-given id's replay is
    answered OK by enqueue.lua, which finds the call's token in the record.)"""
    return [r._replace(code=Code.OK) if r.code is Code.DUPLICATE and not it.token else r
            for it, r in zip(items, results, strict=True)]


def _chunks(items: Sequence[EnqueueItem], size: int) -> list[Sequence[EnqueueItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _make_producer(url: str, settings: Settings | None) -> Producer:
    return Producer(url, settings=settings)


