"""Enqueue jobs: async :class:`Producer`, and :class:`SyncProducer` for WSGI apps."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
from redis.exceptions import ResponseError

from streamjobs import schedules
from streamjobs.codes import Code
from streamjobs.config import Settings
from streamjobs.connection import client_from_url, cluster_of, is_cluster, node_client
from streamjobs.contract import (
    PARENT_POLICIES,
    RUNNING_RECORDED_AS,
    CancelMark,
    JobState,
    Rec,
    Wire,
    check_payload_size,
)
from streamjobs.deps import JobRef, depends_on_field, find_parents, register
from streamjobs.errors import DuplicateJob, InvalidArgument, NotDurable, raise_for_code
from streamjobs.failover import is_transient, until_deadline
from streamjobs.job import NO_FLOW, Flow, check_job_id, dumps, encode_fields, new_job_ids, new_token
from streamjobs.keys import GROUP, TypeKeys, partition_of_key
from streamjobs.pause import pause_type, resume_type
from streamjobs.results import await_result
from streamjobs.schedules import Schedule
from streamjobs.scripts import EnqueueItem, EnqueueResult, Scripts, parse_enqueue
from streamjobs.status import JobStatus, find_entry, type_status
from streamjobs.streams import ensure_types, partition_keys, partitions_of
from streamjobs.tracing import ID_ATTR, Tracing
from streamjobs.webhooks import EVENTS, Webhook, all_webhooks, remove_webhook, set_webhook
from streamjobs.workflows import Step, ordered

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from types import TracebackType

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

#: Jobs per enqueue script call in bulk enqueue (several calls are pipelined).
BULK_CHUNK = 500
#: Script calls per pipeline in bulk enqueue.
PIPELINE_CHUNKS = 10
#: A producer reads a type's partition count again after this many seconds.
PARTITIONS_REFRESH_S = 30.0


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
    #: Not started within this many seconds (server clock) / by then: ends ``expired``.
    expires_in: float | None = None
    expires_at: datetime | float | None = None
    #: Deduplication: jobs of one key, by ``dedup_mode`` (``DedupMode``; default
    #: unique), within ``dedup_ttl`` seconds when given.
    dedup_key: str | None = None
    dedup_mode: str | None = None
    dedup_ttl: float | None = None
    #: A partitioned type's jobs of one key go to one partition, in order.
    key: str | None = None
    #: An http(s) URL called when the job completes or ends dead (engine/webhooks.py).
    webhook: str | None = None
    #: ``high``, ``normal`` (the default) or ``low`` (``contract.Priority``).
    priority: str | None = None
    #: Parents (``(type, id)`` or ``"type/id"``): the job is blocked until each has ended.
    after: Sequence[JobRef] = ()
    #: ``fail`` (default), ``run`` or ``drop``: what a parent that ends dead, cancelled or
    #: expired does to this job (``contract.ParentPolicy``).
    on_parent_failure: str | None = None

    def is_plain(self) -> bool:
        """Payload only: no id, time, policy, header, key or flow option."""
        return (self.job_id is None and self.delay is None and self.run_at is None
                and self.max_attempts is None and self.timeout is None and not self.headers
                and self.webhook is None and self.flow() is NO_FLOW)

    def partition_key(self) -> str | None:
        """What picks the job's partition on a partitioned type: ``key``, else its
        ``dedup_key`` (one partition holds a key's dedup state), else its id (a retried
        enqueue of one id meets its duplicate); None: round-robin."""
        return self.key or self.dedup_key or self.job_id

    def flow(self) -> Flow:
        if (self.expires_in is None and self.expires_at is None and self.dedup_key is None
                and self.dedup_mode is None and self.dedup_ttl is None and self.key is None
                and self.priority is None):
            return NO_FLOW  # the common case: nothing to check
        if self.expires_in is not None and self.expires_at is not None:
            raise InvalidArgument("give expires_in or expires_at, not both")
        for name, value in (("expires_in", self.expires_in), ("dedup_ttl", self.dedup_ttl)):
            if value is not None and not value >= 0:
                raise InvalidArgument(f"{name} must be >= 0 seconds")
        at = (self.expires_at.timestamp() if isinstance(self.expires_at, datetime)
              else self.expires_at)
        return Flow(
            expires_in_ms=_ms(self.expires_in), expires_at_ms=_ms(at),
            dedup_key=self.dedup_key, dedup_mode=self.dedup_mode,
            dedup_ttl_ms=_ms(self.dedup_ttl), limit_key=self.key, priority=self.priority,
        )


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


#: Script calls of one coalescer under way at once: two overlap the server's work on one
#: with the making of the next (engine/producer.py ``_Coalescer``).
COALESCE_IN_FLIGHT = 2
#: ``enqueue``'s options, all left out (its fast path).
_NO_OPTIONS = (None,) * 15


class Enqueued(str):
    """The id :meth:`Producer.enqueue` returns (a ``str``), and what became of the call:
    ``deduplicated`` is True when a job of the same ``dedup_key`` answers for it (the
    id is that job's), ``state`` the job's state."""

    deduplicated: bool
    state: str

    def __new__(cls, job_id: str, state: str, deduplicated: bool = False) -> Enqueued:
        self = super().__new__(cls, job_id)
        self.state, self.deduplicated = state, deduplicated
        return self


class CancelOutcome(StrEnum):
    """What :meth:`Producer.cancel` achieved."""

    #: The job is cancelled (it was waiting or delayed, or its running attempt stopped).
    CANCELLED = "cancelled"
    #: Running a sync handler in a thread, which cannot be stopped: the request is
    #: recorded; when the attempt ends a failure is not retried (the job ends
    #: cancelled), a success completes the job.
    UNINTERRUPTIBLE = "uninterruptible"
    #: Running; the request is recorded but its worker did not answer within the wait
    #: (it will when it next polls; a worker reclaiming the job sees it too).
    REQUESTED = "requested"
    #: Running, and it finished (completed or dead) before the request reached it.
    FINISHED = "finished"


class Cancelled(str):
    """The state the job had (a ``str``: waiting, delayed or running) and ``outcome``."""

    outcome: CancelOutcome

    def __new__(cls, previous_state: str, outcome: CancelOutcome) -> Cancelled:
        self = super().__new__(cls, previous_state)
        self.outcome = outcome
        return self


#: How long cancel of a running job waits for its worker's answer, and how often it looks.
CANCEL_WAIT_S = 2.0
CANCEL_POLL_S = 0.05


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


class _Coalescer:
    """Single enqueues of one type and durability level issued concurrently on one event
    loop, sent as one script call (as the worker's settler batches acks).

    The first caller to find no call under way starts one: a task, which runs once the
    callers already made ready in this turn of the loop have queued up too (no timer: a
    lone enqueue keeps its latency, a crowd woken by one call's answers goes together).
    Callers arriving while a call is in flight go together in the next one, sent as soon
    as it returns. Each caller gets its own result or exception; a caller cancelled while
    queued is left out. The server refuses a whole batch when one job in it is malformed,
    so a refused batch is sent again job by job: only the bad job fails.
    """

    def __init__(self, send: Callable[[list[EnqueueItem]], Awaitable[list[EnqueueResult]]]
                 ) -> None:
        self._send = send
        self._pending: list[tuple[EnqueueItem, asyncio.Future[EnqueueResult]]] = []
        self._in_flight = 0
        self._starting = False  # a call's task made, its batch not taken yet
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(self, item: EnqueueItem) -> EnqueueResult:
        fut: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        """Start a call for the queued callers if fewer than COALESCE_IN_FLIGHT are under way."""
        if self._starting or self._in_flight >= COALESCE_IN_FLIGHT or not self._pending:
            return
        self._starting = True
        task = asyncio.get_running_loop().create_task(self._call())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self) -> None:
        self._starting = False
        live = [(it, f) for it, f in self._pending if not f.done()]  # not cancelled
        # Alone, a call takes half of the crowd and starts the other half at once: the
        # server runs one call while the callers of the other make their next jobs.
        take = (len(live) + 1) // 2 if self._in_flight == 0 else len(live)
        batch, self._pending = live[:take], live[take:]
        self._in_flight += 1
        try:
            self._kick()
            if batch:
                await self._settle(batch)
        finally:
            self._in_flight -= 1
            self._kick()

    async def _settle(self, batch: list[tuple[EnqueueItem, asyncio.Future[EnqueueResult]]]
                      ) -> None:
        try:
            results = await self._send([it for it, _ in batch])
        except ResponseError as e:
            if len(batch) == 1:
                _resolve(batch[0][1], exc=e)
                return
            for one in batch:  # the server refused the batch: find the job it refused
                await self._settle([one])
            return
        except BaseException as e:
            for _, fut in batch:
                _resolve(fut, exc=e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, fut), res in zip(batch, results, strict=True):
            _resolve(fut, res)

    async def aclose(self) -> None:
        """Wait for the calls under way (their callers get their answers)."""
        while self._calls:
            await asyncio.shield(asyncio.gather(*self._calls))


def _resolve(fut: asyncio.Future[EnqueueResult], res: EnqueueResult | None = None, *,
             exc: BaseException | None = None) -> None:
    if fut.done():  # its caller was cancelled while the call was in flight
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(cast("EnqueueResult", res))


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
        self._type_keys: dict[str, TypeKeys] = {}
        #: Partition count of each type used (its config hash) and when it was read.
        self._partitions: dict[str, tuple[int, float]] = {}
        self._next_partition = 0
        #: A plain client per cluster node, for a script pipeline and its WAIT on one
        #: connection.
        self._nodes: dict[str, Redis] = {}
        #: Concurrent single enqueues per (type, durability level), one call per batch.
        self._coalescers: dict[tuple[TypeKeys, str], _Coalescer] = {}
        self._tracing = Tracing() if self.settings.tracing else None

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
                await self._refresh_map(tk)
            return await self._write(tk, chunks, level)

        results = await until_deadline(f"enqueue {tk.type}", attempt,
                                       self.settings.enqueue_deadline)
        return _replays_are_ours([it for chunk in chunks for it in chunk], results)

    async def _refresh_map(self, tk: TypeKeys) -> None:
        """After a failed write to a node: one read of the type's key through the cluster
        client, which refreshes its node map when the node is gone or answers MOVED (the
        write itself went through a node client, which the cluster client never hears
        of). Its own error is the failover's: the write that follows tells."""
        try:
            await self.redis.exists(tk.stream)
        except Exception as e:
            if not is_transient(e):
                raise

    def keys(self, type_: str) -> TypeKeys:
        tk = self._type_keys.get(type_)
        if tk is None:  # checked once per name (a hot path: every enqueue)
            tk = TypeKeys(self.settings.prefix, type_)
            if len(self._type_keys) < 10_000:
                self._type_keys[type_] = tk
        return tk

    async def _ensure_type(self, tk: TypeKeys) -> None:
        if tk.tag in self._known_types:
            return
        await ensure_types(self.redis, [tk])
        self._known_types.add(tk.tag)

    async def partitions(self, type_: str) -> int:
        """How many partitions ``type_`` is spread over: its config hash, read on first
        use and again after ``PARTITIONS_REFRESH_S`` (a producer follows a change)."""
        known = self._partitions.get(type_)
        now = time.monotonic()
        if known is None or now - known[1] > PARTITIONS_REFRESH_S:
            n = await until_deadline(f"read the partitions of {type_}",
                                     lambda: partitions_of(self.redis, self.keys(type_)),
                                     self.settings.enqueue_deadline)
            known = (n, now)
            self._partitions[type_] = known
        return known[0]

    async def _spread(self, type_: str, keys: Sequence[str | None]) -> list[TypeKeys]:
        """The partition of each job: its key's partition, else round-robin (a type
        without partitions: its own keys)."""
        n = await self.partitions(type_)
        if n == 1:
            return [self.keys(type_)] * len(keys)
        parts = self.keys(type_).partitions(n)
        out = []
        for key in keys:
            if key is not None:
                out.append(parts[partition_of_key(key, len(parts))])
            else:
                out.append(parts[self._next_partition % len(parts)])
                self._next_partition += 1
        return out

    async def _enqueue_spread(self, tks: Sequence[TypeKeys], items: Sequence[EnqueueItem],
                              durable: bool | str | None) -> list[EnqueueResult]:
        """Enqueue each item to its partition (pipelines per partition, in order within
        each); results in the items' order."""
        groups: dict[TypeKeys, list[int]] = {}
        for i, tk in enumerate(tks):
            groups.setdefault(tk, []).append(i)
        out: list[EnqueueResult | None] = [None] * len(items)
        for tk, idx in groups.items():
            chunks = _chunks([items[i] for i in idx], BULK_CHUNK)
            done: list[EnqueueResult] = []
            for c in range(0, len(chunks), PIPELINE_CHUNKS):
                done += await self._enqueue(tk, chunks[c : c + PIPELINE_CHUNKS], durable)
            for i, r in zip(idx, done, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _item(self, spec: JobSpec, generated_id: str) -> EnqueueItem:
        """The job as the script takes it: with the caller's id and a token marking this
        call (so a replay of it is recognised), else with ``generated_id`` (``""`` for
        :meth:`_enqueue_one`, which makes it)."""
        payload_json = check_payload_size(dumps(spec.payload), self.settings.max_payload_bytes)
        if spec.is_plain():  # payload only (most bulk jobs): no field encoding
            return EnqueueItem((Wire.PAYLOAD, payload_json), generated_id)
        token = ""
        if spec.job_id is not None:
            job_id, token = check_job_id(spec.job_id), new_token()
        else:
            job_id = generated_id
        fields = encode_fields(
            None, job_id=job_id, max_attempts=spec.max_attempts, timeout=spec.timeout,
            headers=spec.headers, payload_json=payload_json, flow=spec.flow(),
            webhook=spec.webhook,
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
        expires_in: float | None = None, expires_at: datetime | float | None = None,
        dedup_key: str | None = None, dedup_mode: str | None = None,
        dedup_ttl: float | None = None, key: str | None = None, webhook: str | None = None,
        priority: str | None = None, after: Sequence[JobRef] = (),
        on_parent_failure: str | None = None,
    ) -> Enqueued:
        """Enqueue one job; returns its id. Raises DuplicateJob if ``job_id`` exists.

        ``delay`` is seconds on the server clock; ``run_at`` a datetime or epoch seconds.
        ``expires_in`` (seconds, server clock) / ``expires_at``: a job not started by then
        never runs (it ends ``expired``). ``dedup_key`` with ``dedup_mode`` (``unique``:
        one waiting, delayed or running job per key, the default; ``throttle``: while the
        key's job exists or for ``dedup_ttl`` seconds; ``debounce``: replace the key's job
        not started yet, payload and start time): when another job answers for the key,
        its id is returned with ``deduplicated`` True.
        ``durable``: None follows ``settings.durability``; True waits for the configured
        level (``aof`` when none is); or name the level (``"aof"``, ``"replica"``).
        The id is made here when not given, before the call is sent, so a replay of the
        call (its reply lost) is the same job, reported once. ``key``: on a partitioned
        type, jobs of one key go to one partition (in order); without it, round-robin.
        ``webhook``: an http(s) URL called when the job completes or ends dead (signed
        with ``settings.webhook_secret`` of the worker that delivers it).
        ``priority``: ``high``, ``normal`` (the default) or ``low``: a worker starts every
        waiting job of a higher level of the type before any of a lower one.
        ``after``: parents, each ``(type, id)`` or ``"type/id"``; the job is ``blocked``
        until every one has ended, then runs with their results (``job.parent_results``).
        ``on_parent_failure``: ``fail`` (default: the job ends dead), ``run`` (it runs
        anyway) or ``drop`` (it ends cancelled) when a parent ends dead, cancelled or
        expired.
        With ``settings.tracing``, the call is a span and the job carries its
        ``traceparent`` header (engine/tracing.py).
        """
        if (self._tracing is None and not headers and not after
                and (job_id, delay, run_at, max_attempts, timeout, durable, expires_in,
                     expires_at, dedup_key, dedup_mode, dedup_ttl, key, webhook, priority,
                     on_parent_failure) == _NO_OPTIONS):
            return await self._enqueue_plain(type_, payload)  # the hot path: no JobSpec
        spec = JobSpec(payload, job_id, delay, run_at, max_attempts, timeout, headers or {},
                       expires_in, expires_at, dedup_key, dedup_mode, dedup_ttl, key, webhook,
                       priority, after, on_parent_failure)
        if self._tracing is None:
            return await self._enqueue_spec(type_, spec, durable)
        with self._tracing.enqueue(type_, spec.headers) as (span, traced):
            done = await self._enqueue_spec(type_, replace(spec, headers=traced), durable)
            span.set_attribute(ID_ATTR, str(done))
            return done

    async def _enqueue_plain(self, type_: str, payload: Any) -> Enqueued:
        """A payload-only job: the item built directly (what ``_item`` makes of a plain
        spec)."""
        (tk,) = await self._spread(type_, [None])
        body = check_payload_size(dumps(payload), self.settings.max_payload_bytes)
        res = await self._enqueue_one(tk, EnqueueItem((Wire.PAYLOAD, body), ""), None)
        return Enqueued(res.job_id, res.state, res.code is Code.DEDUPLICATED)

    async def _enqueue_spec(self, type_: str, spec: JobSpec,
                            durable: bool | str | None) -> Enqueued:
        if spec.after or spec.on_parent_failure is not None:
            res = await self._enqueue_after(type_, spec, durable)
        else:
            (tk,) = await self._spread(type_, [spec.partition_key()])
            res = await self._enqueue_one(tk, self._item(spec, ""), durable)
        if res.code is Code.DUPLICATE:
            raise DuplicateJob(res.code, res.job_id, f"it is {res.state}")
        return Enqueued(res.job_id, res.state, res.code is Code.DEDUPLICATED)

    async def _enqueue_after(self, type_: str, spec: JobSpec,
                             durable: bool | str | None) -> EnqueueResult:
        """A job that waits for its parents (engine/deps.py): enqueued blocked, then
        registered with each parent."""
        if not spec.after:
            raise InvalidArgument("on_parent_failure needs after=")
        if spec.delay is not None or spec.run_at is not None:
            raise InvalidArgument("a job with after= starts when its parents end: give it "
                                  "no delay or run_at")
        if spec.on_parent_failure is not None and spec.on_parent_failure not in PARENT_POLICIES:
            raise InvalidArgument("on_parent_failure must be fail, run or drop, not "
                                  f"{spec.on_parent_failure!r}")
        parents = await find_parents(self.redis, self.settings.prefix, list(spec.after),
                                     self.partitions)
        spec = replace(spec, job_id=spec.job_id or new_job_ids(1)[0])
        (tk,) = await self._spread(type_, [spec.partition_key()])
        item = self._item(spec, "")
        extra: list[bytes | str] = [Wire.DEPENDS_ON, depends_on_field(parents)]
        if spec.on_parent_failure is not None:
            extra += [Wire.ON_PARENT_FAILURE, spec.on_parent_failure]
        res = await self._enqueue_one(tk, item._replace(fields=[*item.fields, *extra]),
                                      durable)
        if res.code is not Code.OK:  # a duplicate id, or deduplicated: nothing to register
            return res
        state = await register(self.scripts, tk, res.job_id, parents,
                               self.settings.result_ttl * 1000)
        return EnqueueResult(res.code, res.job_id, state)

    async def _enqueue_one(self, tk: TypeKeys, item: EnqueueItem,
                           durable: bool | str | None) -> EnqueueResult:
        """One job, in one script call with the single enqueues of its type and level
        (partition) issued meanwhile on this event loop (see :class:`_Coalescer`). An item without a
        job id gets one made when its call is sent (before its first try)."""
        level = self._level(durable)
        key = (tk, level)
        co = self._coalescers.get(key)
        if co is None:

            async def send(items: list[EnqueueItem]) -> list[EnqueueResult]:
                ids = iter(new_job_ids(sum(1 for it in items if not it.job_id)))
                items = [EnqueueItem(f, j or next(ids), d, r, t) for f, j, d, r, t in items]
                return await self._enqueue(tk, _chunks(items, BULK_CHUNK), level)
            co = self._coalescers[key] = _Coalescer(send)
        return await co.submit(item)

    async def enqueue_batch(self, type_: str, specs: Sequence[JobSpec], *,
                            durable: bool | str | None = None,
                            key: str | None = None) -> list[EnqueueResult]:
        """Enqueue many jobs in pipelined script calls; one result per job, in order.

        A duplicate id is not enqueued again: its result has ``Code.DUPLICATE``; a job
        another of its ``dedup_key`` answers for has ``Code.DEDUPLICATED`` and that id.
        ``key`` as in :meth:`enqueue`, for every job (else each spec's own). One job goes
        with the single enqueues issued meanwhile (one script call for them all).
        With ``settings.tracing``: one span, whose context every job carries.
        """
        if key is not None:  # every job's key: its partition and its limit_key
            specs = [replace(s, key=key) for s in specs]
        if self._tracing is None:
            return await self._enqueue_specs(type_, specs, durable, key)
        with self._tracing.enqueue(type_, None) as (_, carrier):
            return await self._enqueue_specs(
                type_, [replace(s, headers={**s.headers, **carrier}) for s in specs],
                durable, key)

    async def _enqueue_specs(self, type_: str, specs: Sequence[JobSpec],
                             durable: bool | str | None,
                             key: str | None) -> list[EnqueueResult]:
        if any(s.after or s.on_parent_failure is not None for s in specs):
            # Each waits for its parents: enqueued and registered one by one, in order.
            out: list[EnqueueResult] = []
            for s in specs:
                if s.after or s.on_parent_failure is not None:
                    out.append(await self._enqueue_after(type_, s, durable))
                else:
                    out += await self._enqueue_specs(type_, [s], durable, key)
            return out
        if len(specs) == 1:
            (tk,) = await self._spread(type_, [key if key is not None
                                               else specs[0].partition_key()])
            return [await self._enqueue_one(tk, self._item(specs[0], ""), durable)]
        items = [self._item(s, i) for s, i in zip(specs, new_job_ids(len(specs)), strict=True)]
        tks = await self._spread(type_, [key if key is not None else s.partition_key()
                                          for s in specs])
        if len(set(tks)) > 1:
            return await self._enqueue_spread(tks, items, durable)
        return await self._enqueue(tks[0], _chunks(items, BULK_CHUNK), durable)

    async def enqueue_many(self, type_: str, payloads: Iterable[Any], *,
                           durable: bool | str | None = None,
                           key: str | None = None) -> list[str]:
        """Enqueue one job per payload (pipelined); returns their ids in order. ``key`` as
        in :meth:`enqueue`."""
        if self._tracing is not None:
            with self._tracing.enqueue(type_, None) as (_, carrier):
                specs = [JobSpec(p, headers=carrier) for p in payloads]
                return [r.job_id for r in await self._enqueue_specs(type_, specs, durable,
                                                                    key)]
        limit = self.settings.max_payload_bytes
        bodies = [check_payload_size(dumps(p), limit) for p in payloads]
        head = (Wire.PAYLOAD,) if key is None else (Wire.LIMIT_KEY, key, Wire.PAYLOAD)
        items = [EnqueueItem((*head, body), job_id)
                 for body, job_id in zip(bodies, new_job_ids(len(bodies)), strict=True)]
        tks = await self._spread(type_, [key] * len(items))
        if len(set(tks)) > 1:
            done = await self._enqueue_spread(tks, items, durable)
            return [r.job_id for r in done]
        tk = tks[0]
        # Pipelines one after another (not concurrently): the stream keeps the jobs in
        # the order given. Each pipeline bounds the memory of one round trip.
        ids: list[str] = []
        chunks = _chunks(items, BULK_CHUNK)
        for i in range(0, len(chunks), PIPELINE_CHUNKS):
            done = await self._enqueue(tk, chunks[i : i + PIPELINE_CHUNKS], durable)
            ids += [r.job_id for r in done]
        return ids

    async def workflow(self, steps: Sequence[Step]) -> dict[str, Enqueued]:
        """Enqueue a workflow (``streamjobs.workflows``: ``Step``, ``chain``, ``group``):
        parents first, each child blocked until its parents have ended. Returns each
        step's job id by its name. With ``settings.tracing``, the steps share one trace."""
        if self._tracing is None:
            return await self._workflow(steps)
        with self._tracing.enqueue("workflow", None):
            return await self._workflow(steps)

    async def _workflow(self, steps: Sequence[Step]) -> dict[str, Enqueued]:
        """Checked whole first (``workflows.ordered``). The steps that wait for none go
        first, pipelined per type; then each waiting step, registered with its parents."""
        plan = ordered(steps)
        types = {str(s.name): s.type for s in plan}
        ids: dict[str, Enqueued] = {}
        roots: dict[str, list[Step]] = {}
        for s in plan:
            if not s.after and s.on_parent_failure is None:
                roots.setdefault(s.type, []).append(s)
        for type_, group in roots.items():
            specs = [JobSpec(s.payload, **dict(s.options)) for s in group]
            for s, res in zip(group, await self.enqueue_batch(type_, specs), strict=True):
                if res.code is Code.DUPLICATE:
                    raise DuplicateJob(res.code, res.job_id,
                                       f"step {s.name!r}: it is {res.state}")
                ids[str(s.name)] = Enqueued(res.job_id, res.state,
                                            res.code is Code.DEDUPLICATED)
        for s in plan:
            if str(s.name) not in ids:
                ids[str(s.name)] = await self.enqueue(
                    s.type, s.payload, after=[(types[p], str(ids[p])) for p in s.after],
                    on_parent_failure=s.on_parent_failure, **dict(s.options))
        return {str(s.name): ids[str(s.name)] for s in plan}

    async def status(self, type_: str, job_id: str) -> JobStatus | None:
        """The job's state and record, or None when unknown (or expired). A partitioned
        type's job is looked for in each partition."""
        return await type_status(self.redis, self.keys(type_), job_id)

    async def result(self, type_: str, job_id: str,
                     timeout: float = 30.0) -> Any:  # noqa: ASYNC109 - the wait's limit
        """The job's result once it completes (a blocking read on the type's events, no
        polling). Raises JobFailed for a dead job, JobCancelled, ResultTimeout."""
        return await await_result(self.redis, self.keys(type_), job_id, timeout)

    async def cancel(self, type_: str, job_id: str, *,
                     wait: float = CANCEL_WAIT_S) -> Cancelled:
        """Cancel a job; returns the state it had, with ``outcome`` (:class:`CancelOutcome`).

        A waiting or delayed job is cancelled at once. A running one: the request is
        recorded and the worker holding it stops the attempt (an async handler is
        cancelled, a handler in a process killed) and ends the job ``cancelled``, never
        retried; this waits up to ``wait`` seconds for its answer.
        """
        tk, ttl = self.keys(type_), self.settings.result_ttl * 1000
        code, prev = await self.scripts.cancel(tk, GROUP, job_id, ttl)
        if code is Code.NOT_FOUND:  # in another partition, or a plain XADD's (no record)
            parts = await partition_keys(self.redis, tk)
            for part in parts[1:]:
                code, prev = await self.scripts.cancel(part, GROUP, job_id, ttl)
                if code is not Code.NOT_FOUND:
                    tk = part
                    break
            for part in parts if code is Code.NOT_FOUND else ():
                found = await find_entry(self.redis, part, job_id)
                if found is not None:
                    code, prev = await self.scripts.cancel(part, GROUP, job_id, ttl,
                                                           found[0])
                    tk = part
                    break
        if code is Code.REQUESTED:
            return Cancelled(prev, await self._cancel_answer(tk, job_id, wait))
        raise_for_code(code, job_id, prev)
        return Cancelled(prev, CancelOutcome.CANCELLED)

    async def _cancel_answer(self, tk: TypeKeys, job_id: str, wait: float) -> CancelOutcome:
        """Watch the record until the worker holding the job answers the request."""
        with anyio.move_on_after(wait):
            while True:
                raw = await self.redis.hmget(tk.job(job_id), Rec.STATE, Rec.CANCEL)
                state, mark = (v.decode() if isinstance(v, bytes) else v for v in raw)
                if state == JobState.CANCELLED:
                    return CancelOutcome.CANCELLED
                if state != RUNNING_RECORDED_AS:
                    return CancelOutcome.FINISHED
                if mark == CancelMark.UNINTERRUPTIBLE:
                    return CancelOutcome.UNINTERRUPTIBLE
                await anyio.sleep(CANCEL_POLL_S)
        return CancelOutcome.REQUESTED

    # ---- pause a type, schedules (engine/pause.py, engine/schedules.py) -----------------

    async def pause(self, type_: str) -> bool:
        """Pause a type: workers start none of its jobs (within about a second) until
        :meth:`resume`; enqueues still land, running jobs finish. False if it was.
        The type becomes known (listed by stats) if it was not."""
        tk = self.keys(type_)
        await self._ensure_type(tk)
        return await pause_type(self.redis, tk)

    async def resume(self, type_: str) -> bool:
        """Resume a paused type; False if it was not paused."""
        return await resume_type(self.redis, self.keys(type_))

    async def schedule(
        self, name: str, type_: str, payload: Any = None, *, cron: str | None = None,
        every: float | None = None, tz: str = "UTC", max_attempts: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's own time limit
        headers: Mapping[str, str] | None = None, paused: bool = False,
        priority: str | None = None,
    ) -> Schedule:
        """Create or replace the schedule ``name``: a job of ``type_`` with ``payload`` at
        each tick of ``cron`` (5 fields, or 6 with seconds first) in ``tz``, or ``every``
        seconds. Workers of the type enqueue each tick exactly once."""
        s = Schedule(name, type_, cron=cron, every=every, tz=tz, payload=payload,
                     max_attempts=max_attempts, timeout=timeout, headers=dict(headers or {}),
                     paused=paused, priority=priority)
        return await schedules.upsert(self.redis, self.settings.prefix, s)

    async def unschedule(self, name: str) -> bool:
        """Delete a schedule (the jobs it enqueued stay); False when there was none."""
        return await schedules.remove(self.redis, self.settings.prefix, name)

    async def schedules(self) -> list[Schedule]:
        """Every schedule of every known type."""
        return await schedules.all_schedules(self.redis, self.settings.prefix)

    async def get_schedule(self, name: str) -> Schedule | None:
        return await schedules.get(self.redis, self.settings.prefix, name)

    async def pause_schedule(self, name: str) -> Schedule | None:
        return await schedules.set_paused(self.redis, self.settings.prefix, name, True)

    async def resume_schedule(self, name: str) -> Schedule | None:
        return await schedules.set_paused(self.redis, self.settings.prefix, name, False)

    async def run_schedule_now(self, name: str) -> str | None:
        """Enqueue the schedule's job once now (its ticks go on); returns the job id."""
        return await schedules.run_now(self.redis, self.scripts, self.settings.prefix, name)

    # ---- webhooks (engine/webhooks.py) -------------------------------------------------

    async def set_webhook(self, type_: str, url: str, *, name: str = "default",
                          events: Sequence[str] = EVENTS, secret: str = "") -> Webhook:
        """Create or replace the webhook ``name`` of ``type_``: ``url`` is POSTed each
        ``events`` (``completed``, ``dead``) of a job of the type, signed with ``secret``
        (empty: unsigned). Workers of the type see it within a second."""
        hook = Webhook(type_, url, name, tuple(events), secret)
        return await set_webhook(self.redis, self.settings.prefix, hook)

    async def webhooks(self, type_: str | None = None) -> list[Webhook]:
        """The webhooks of ``type_``, or of every known type."""
        return await all_webhooks(self.redis, self.settings.prefix, type_)

    async def remove_webhook(self, type_: str, name: str = "default") -> bool:
        """Delete a webhook; False when there was none."""
        return await remove_webhook(self.redis, self.settings.prefix, type_, name)

    async def aclose(self) -> None:
        for co in self._coalescers.values():
            await co.aclose()
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

    def enqueue(self, type_: str, payload: Any, **options: Any) -> Enqueued:
        return self._portal.call(lambda: self._producer.enqueue(type_, payload, **options))

    def cancel(self, type_: str, job_id: str) -> Cancelled:
        return self._portal.call(self._producer.cancel, type_, job_id)

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


