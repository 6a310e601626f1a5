"""The worker: one anyio task group of small named roles.

    fetcher ──memory stream──► runners (fixed set, = concurrency) ──► settler
    reclaimer ─┘ (claimed entries)          ack / fail / release, batched per type
    housekeeping: promoter, toucher, heartbeat

The fetcher never asks for more entries than there are free slots, so a crash strands
at most this worker's own in-flight jobs. Outcomes (``contract.Attempt``) are a table of
small functions (``_SETTLE``); each hands the job to the settler (engine/settle.py), which sends one
script call per type and kind per flush.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from streamjobs import logs, replies, schedules
from streamjobs.codes import Code
from streamjobs.config import Settings
from streamjobs.connection import (
    BLOCK_MARGIN_S,
    SOCKET_TIMEOUT,
    client_from_url,
    is_cluster,
    socket_timeout_of,
)
from streamjobs.contract import (
    HEARTBEAT_RUNNING_MAX,
    PRIORITIES,
    Attempt,
    Failure,
    Heartbeat,
    JobState,
    Outcome,
    Priority,
    Rec,
    Wire,
    job_id_of,
)
from streamjobs.deps import DependencyRelay
from streamjobs.errors import (
    ConfigError,
    DecodeError,
    InvalidArgument,
)
from streamjobs.fetch import Capacity, ReadState, above, by_level, fetch_groups, first_levels
from streamjobs.handoff import Handoff, HandoffClosed
from streamjobs.isolation import Processes, Threads
from streamjobs.job import Job
from streamjobs.keys import (
    GROUP,
    LEVEL_SEP,
    PARTITION_SEP,
    TypeKeys,
    split_tag,
    worker_key,
    workers_key,
)
from streamjobs.metrics import WorkerMetrics
from streamjobs.outcomes import Result, error_outcome, ok
from streamjobs.pause import REFRESH_S, paused_types
from streamjobs.progress import JobContext
from streamjobs.reconnect import (
    NETWORK_ERRORS,
    SERVER_ERRORS,
    Backoff,
    lost_group,
    ours,
    retrying,
)
from streamjobs.registry import Handler, Registry, default_registry
from streamjobs.retry import parse_rate
from streamjobs.scripts import (
    FailArgs,
    Limits,
    ReleaseItem,
    Scripts,
    StopAction,
    StopItem,
    StopResult,
)
from streamjobs.settle import Settler
from streamjobs.streams import ensure_group, ensure_types, publish_partitions
from streamjobs.tracing import Tracing
from streamjobs.webhooks import DEFAULT_POLICY, WEBHOOK_TYPE, Deliverer, Notifier, set_webhook

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anyio.abc import TaskStatus
    from redis.asyncio import Redis

    from streamjobs.retry import Policy

log = logging.getLogger("streamjobs.worker")
HEARTBEAT_S = 5.0
#: Shortest gap between two heartbeats: a newly fetched job is published within it.
HEARTBEAT_MIN_S = 1.0
#: Consumers idle this long with nothing pending are removed from the group.
PRUNE_IDLE_S = 3600.0
PRUNE_EVERY_S = 300.0
#: How often a worker with jobs in flight looks for cancel requests of them.
CANCEL_POLL_S = 0.25


@dataclass(slots=True)
class Delivery:
    """One entry this worker owns, from fetch until its final transition."""

    type: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1
    fetched_at: float = field(default_factory=time.monotonic)
    touched_at: float = field(default_factory=time.monotonic)
    scope: anyio.CancelScope | None = None
    #: A sync attempt's wait for its thread: only shutdown cancels it (a timeout waits).
    waiting: anyio.CancelScope | None = None
    #: Set when shutdown cancels the attempt (as opposed to its timeout).
    shutdown: bool = False
    #: Set when touch finds the entry owned by another consumer: the attempt is
    #: cancelled and settles nothing (the new owner settles the job).
    lost: bool = False
    #: This attempt's number and the max_attempts it runs under (known once decoded).
    attempt: int = 1
    max_attempts: int = 0
    #: Set when a cancel of this running job was asked (``Producer.cancel``): the attempt
    #: is stopped where it can be and the job ends cancelled.
    cancel_requested: bool = False
    #: When its attempt began (monotonic; 0 before): its settle carries the duration.
    began: float = 0.0
    #: The entry's ``id`` field, else its entry id: read once (every step needs it).
    job_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.job_id = job_id_of(self.entry_id, self.fields)

    def duration_ms(self) -> int:
        return int((time.monotonic() - self.began) * 1000) if self.began else -1


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker:
    """Consumes one or more job types with bounded concurrency."""

    def __init__(
        self,
        redis: Redis | str,
        registry: Registry | None = None,
        *,
        types: Sequence[str] | None = None,
        concurrency: int = 16,
        settings: Settings | None = None,
        grace_period: float = 30.0,
        block_ms: int = 1000,
        metrics: WorkerMetrics | None = None,
        name: str | None = None,
        webhooks: bool | None = None,
        webhook_policy: Policy | None = None,
    ) -> None:
        """``webhooks``: serve webhook deliveries (``streamjobs.webhook``) too (None:
        ``settings.webhooks``). ``webhook_policy``: their retry
        policy (``webhooks.DEFAULT_POLICY``)."""
        if concurrency < 1:
            raise InvalidArgument("concurrency must be >= 1")
        self.settings = settings if settings is not None else Settings.from_env()
        self.registry = registry if registry is not None else default_registry
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = _client(redis, block_ms)
        self.metrics = metrics or WorkerMetrics()
        chosen = list(types) if types else self.registry.types()
        if not chosen:
            raise ConfigError("no job types to consume: register a handler first")
        serve = webhooks if webhooks is not None else self.settings.webhooks
        if serve and WEBHOOK_TYPE not in chosen:
            chosen.append(WEBHOOK_TYPE)
        self.deliverer = Deliverer(self.redis, self.settings.prefix,
                                   self.settings.webhook_secret, self.settings.webhook_timeout,
                                   self.metrics)
        self._builtin = {WEBHOOK_TYPE: Handler(WEBHOOK_TYPE, self.deliverer,
                                               webhook_policy or DEFAULT_POLICY, True)}
        # Keyed by stream name (``TypeKeys.name``): a partitioned type is served as each of
        # its partitions (``T``, ``T#1`` …), each of them at every priority level (``T``,
        # ``T!high``, ``T!low``), all mapped to its one handler.
        self.handlers: dict[str, Handler] = {}
        self.keys: dict[str, TypeKeys] = {}
        #: The streams read: every type's own, and a level's once it exists (engine/fetch.py
        #: levels_found): a type that never uses priorities reads one stream.
        self._live: set[str] = set()
        for t in chosen:
            for tk in self._partitions(t):
                lanes = tk.levels() if LEVEL_SEP not in t else [tk]
                for lane in lanes:
                    self.handlers[lane.name] = self._handler(tk.type)
                    self.keys[lane.name] = lane
                    if lane.level is Priority.NORMAL or len(lanes) == 1:
                        self._live.add(lane.name)
        self._by_stream = {tk.stream.encode(): name for name, tk in self.keys.items()}
        #: One promoter per type and partition (its delayed set is every level's): the
        #: promote script sends each job to its level's stream.
        self._delayed_keys = list({tk.at(Priority.NORMAL): None for tk in self.keys.values()})
        # Entries are read with repeated field names kept track of (they are malformed).
        self.redis.set_response_callback("XREADGROUP", replies.read_groups)
        self.scripts = Scripts(self.redis)
        self.concurrency = concurrency
        #: Entries one read takes at most: half the slots, so the next read is under way
        #: while the jobs of this one run, and their acks while the next ones run.
        self._read_size = max(1, -(-concurrency // 2))
        self.grace_period = grace_period
        self.block_ms = block_ms
        self.name = name or consumer_name()
        self._outstanding: dict[str, Delivery] = {}
        #: Set when jobs were fetched or settled: the next heartbeat (>= HEARTBEAT_MIN_S
        #: after the last) publishes the change without waiting out HEARTBEAT_S.
        self._fetched: anyio.Event | None = None
        self._stopping = False
        self._stop_requested = False
        self._read_states: list[ReadState] = []
        #: Types paused on the server (refreshed by _pause_watch): not fetched.
        self._paused: set[str] = set()
        self.settler = Settler(
            self.scripts, self.keys, {t: h.policy for t, h in self.handlers.items()},
            self.name, self.settings.result_ttl * 1000, self.metrics, self._regroup,
            self._settled,
        )
        self.notifier = Notifier(self.redis, self.scripts, self.settings.prefix, self.keys)
        self.deps = DependencyRelay(self.redis, self.scripts, self.settings.prefix,
                                    self.keys.values(), self.settings.result_ttl * 1000)
        self.settler.notifier = self.notifier
        self._tracing = Tracing() if self.settings.tracing else None
        self._pruned_at = -PRUNE_EVERY_S
        #: Types (hash tags) with concurrency limits: each start goes through stop.lua.
        self._limits = {t: _limits_of(h) for t, h in self.handlers.items()
                        if h.policy.max_running or h.policy.max_running_per_key
                        or h.policy.rate_limit or h.policy.rate_limit_per_key}
        #: One start at a time per type limited per key, in delivery order (anyio's Lock
        #: is FIFO): concurrent calls on several connections could reach the server out
        #: of order and a key's jobs would take its slot out of order. A type limited
        #: only by max_running needs no order: its starts go concurrently.
        self._start_order = {t: anyio.Lock() for t, lim in self._limits.items()
                             if lim.max_running_per_key}
        self._threads = Threads()
        self._processes = {
            t: Processes(h.policy.max_tasks_per_child, h.policy.max_child_memory_mb)
            for t, h in self.handlers.items()
            if h.policy.isolation == "process" and not h.is_async
        }

    def _handler(self, type_: str) -> Handler:
        builtin = self._builtin.get(type_)
        return builtin if builtin is not None else self.registry.get(type_)

    def _partitions(self, name: str) -> list[TypeKeys]:
        """The partitions a worker on ``name`` serves: every partition of a type, or the
        one partition ``T#k`` names; a name ending ``!high`` / ``!low`` (``!normal``) serves
        only that level's stream of them (a worker of its own for a level no busier level
        may starve)."""
        name, sep, level = name.partition(LEVEL_SEP)
        if sep:
            if level not in PRIORITIES:
                raise ConfigError(f"{name}{sep}{level!r}: a level is high, normal or low")
            return [tk.at(Priority(level)) for tk in self._partitions(name)]
        if name.endswith(PARTITION_SEP + "0"):  # partition 0 alone (its tag is the type)
            self._handler(name[:-2])
            return [TypeKeys(self.settings.prefix, name[:-2])]
        type_, k = split_tag(name)
        h = self._handler(type_)
        if name != type_ and k == 0:
            raise ConfigError(f"{name!r} is neither a type nor a partition of one")
        if k >= h.partitions:
            raise ConfigError(f"type {type_!r} has {h.partitions} partitions: no {name!r}")
        tk = TypeKeys(self.settings.prefix, type_)
        return [TypeKeys(self.settings.prefix, type_, k)] if k else tk.partitions(h.partitions)

    def _open_runtime(self) -> None:
        """anyio primitives belong to a running event loop: made when run() starts."""
        self._slot_freed = anyio.Event()
        self.capacity = Capacity(self.concurrency)
        self._stop = anyio.Event()
        self._fetch_scope = anyio.CancelScope()
        self.settler.open()
        self.notifier.open()
        if self._stop_requested:
            self._stop.set()

    # ---- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Begin graceful shutdown: stop fetching, finish or release in-flight jobs."""
        self._stop_requested = True
        if hasattr(self, "_stop"):
            self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._outstanding)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._open_runtime()
        await self._setup()
        handoff: Handoff[Delivery] = Handoff()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.concurrency):
                    tg.start_soon(self._runner, handoff)
                tg.start_soon(self._fetcher, handoff)
                tg.start_soon(self._reclaimer, handoff)
                for role in (self.settler.run, self._promoter, self._toucher, self._heartbeat,
                             self._cancel_watcher, self._pause_watch, self._scheduler,
                             self.notifier.run, self.deps.run):
                    tg.start_soon(role)
                task_status.started()
                await self._stop.wait()
                await self._shutdown()
                tg.cancel_scope.cancel()
        finally:
            handoff.close()
            self._threads.close()
            for pool in self._processes.values():
                pool.close()
            with anyio.CancelScope(shield=True):
                await self._leave()

    async def _setup(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await ensure_types(self.redis, self._live_keys())
                await self._find_levels()
                await self._publish_partitions()
                # Before the first fetch: a paused type stays paused across a restart.
                self._paused = await paused_types(self.redis, list(self.keys.values()))
                for h in {h.type: h for h in self.handlers.values()}.values():
                    if h.schedule is not None:
                        await schedules.upsert(self.redis, self.settings.prefix, h.schedule,
                                               declared=True)
                    if h.webhook is not None:
                        hook = h.webhook
                        if not hook.secret and self.settings.webhook_secret:
                            hook = replace(hook, secret=self.settings.webhook_secret)
                        await set_webhook(self.redis, self.settings.prefix, hook)
                await self.notifier.refresh()
                return
            except SERVER_ERRORS as e:
                await backoff.wait("server unreachable at start" if isinstance(e, NETWORK_ERRORS)
                                   else "setting up the consumer groups failed", e)

    def _live_keys(self) -> list[TypeKeys]:
        return [tk for name, tk in self.keys.items() if name in self._live]

    async def _find_levels(self) -> None:
        """Start reading the stream of a priority level once it exists (its first job
        made it): one EXISTS per level stream not read yet, at start and with each pause
        refresh (REFRESH_S), so a level's first job waits at most that and a block."""
        unread = [name for name in self.keys if name not in self._live]
        if not unread:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in unread:
                pipe.exists(self.keys[name].stream)
            found = await pipe.execute()
        for name, n in zip(unread, found, strict=True):
            if n:
                await ensure_group(self.redis, self.keys[name])
                self._live.add(name)
                log.info("reading %s: its first job of priority %s arrived",
                         self.keys[name].stream, self.keys[name].level)

    async def _publish_partitions(self) -> None:
        """Producers spread a type over the partitions its workers declare: each worker
        records its handlers' count (at start, one write per type)."""
        for h in {h.type: h for h in self.handlers.values()}.values():
            before = await publish_partitions(self.redis, TypeKeys(self.settings.prefix,
                                                                  h.type), h.partitions)
            if before > h.partitions:
                log.warning("type %s had %d partitions and now has %d: jobs left in "
                            "partitions %d-%d are not served until a worker names them "
                            "(types=%s#k)", h.type, before, h.partitions, h.partitions,
                            before - 1, h.type)

    async def _regroup(self) -> None:
        """The server lost a stream or its consumer group (FLUSHALL, a restart without
        persistence, a failover to a node without it): recreate them, loudly. Entries
        this worker was running are delivered again if their stream survived."""
        log.error("the consumer group %r of %s is gone from the server (FLUSHALL, a restart "
                  "without persistence, a failover?): recreating it; jobs in flight may run "
                  "again, jobs whose stream was lost are gone", GROUP, ", ".join(self.keys))
        for state in self._read_states:
            state.reset()
        try:
            await ensure_types(self.redis, self._live_keys())
        except SERVER_ERRORS as e:
            if ours(e):
                raise
            log.warning("recreating the consumer groups failed: %s (tried again)", e)

    async def _recover(self, what: str, backoff: Backoff, e: BaseException) -> None:
        """After any error of a loop: recreate a lost group, then wait and try again."""
        if lost_group(e):
            await self._regroup()
        await backoff.wait(what, e)

    async def _shutdown(self) -> None:
        self._stopping = True
        self._fetch_scope.cancel()
        log.info("stopping: %d in flight, grace %.1fs", self.in_flight, self.grace_period)
        with anyio.move_on_after(self.grace_period):
            await self._drained()
        for d in list(self._outstanding.values()):
            d.shutdown = True
            for scope in (d.scope, d.waiting):
                if scope is not None:
                    scope.cancel()
        with anyio.move_on_after(10):
            await self._drained()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self.settler.flush_all()
            await self._release_leftovers()
            try:
                await self.notifier.flush()
            except SERVER_ERRORS as e:
                log.error("webhook deliveries of settled jobs not enqueued at shutdown "
                          "(lost): %s", e)

    async def _release_leftovers(self) -> None:
        """Entries still in this consumer's pending list (a fetch cut short by shutdown
        was delivered but never seen) go back to the stream."""
        for type_, tk in self.keys.items():
            if type_ not in self._live:
                continue
            try:
                rows = replies.pending_rows(await self.redis.xpending_range(
                    tk.stream, GROUP, "-", "+", 10_000, consumername=self.name
                ))
                if not rows:
                    continue
                ids = [row["message_id"].decode() for row in rows]
                found = replies.entries(await self.redis.xrange(tk.stream, ids[0], ids[-1]))
                job_ids = {e.decode(): job_id_of(e.decode(), f) for e, f in found}
                entries = [ReleaseItem(i, job_ids.get(i, i)) for i in ids]
                codes = await self.scripts.release(tk, GROUP, self.name, entries)
                self.metrics.released(type_, codes.count(Code.OK))
            except SERVER_ERRORS as e:
                if ours(e):
                    raise
                log.warning("could not release leftovers of %s: %s", type_, e)

    async def _drained(self) -> None:
        while self._outstanding:
            self._slot_freed = anyio.Event()
            await self._slot_freed.wait()

    async def _leave(self) -> None:
        try:
            with anyio.move_on_after(2):
                await self.redis.delete(worker_key(self.settings.prefix, self.name))
                await self.redis.zrem(workers_key(self.settings.prefix), self.name)
        except SERVER_ERRORS as e:
            if ours(e):
                raise
        await self.deliverer.aclose()
        if self._owns_client:
            await self.redis.aclose()

    # ---- fetcher ---------------------------------------------------------------------

    async def _fetcher(self, send: Handoff[Delivery]) -> None:
        """One reader per fetch group (engine/fetch.py), all under one capacity."""
        groups = fetch_groups(self.keys, is_cluster(self.redis))
        self._read_states = [ReadState(tags) for tags in groups]
        with self._fetch_scope:
            async with anyio.create_task_group() as tg:
                for state in self._read_states:
                    tg.start_soon(self._reader, state, len(groups) == 1, send)

    async def _reader(self, state: ReadState, alone: bool, send: Handoff[Delivery]) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                await self._read_once(state, alone, send)
                backoff.reset()
            except SERVER_ERRORS as e:
                state.reset()  # a failover or a new group: what was delivered may not be
                await self._recover("fetch failed", backoff, e)

    async def _read_once(self, state: ReadState, alone: bool,
                         send: Handoff[Delivery]) -> None:
        active = [t for t in state.tags if t in self._live and t not in self._paused]
        if not active:
            await anyio.sleep(REFRESH_S)
            return
        levels = by_level(self.keys, active)
        if alone and not levels and (len(active) == 1 or self.capacity.free >= len(active)):
            # Every stream may deliver its share: block in XREADGROUP itself. One stream
            # always may, once a slot is free: it waits for one here (a wait in XREAD
            # would cost two more commands a cycle, and learn nothing it needs).
            # Half the slots, but one per stream at least (else a small worker of several
            # types would fall back to the XREAD wait).
            n = await self.capacity.take(max(self._read_size, len(active)))
            if n >= len(active):
                state.reset()
                await self._claim(active, n, None, block=self.block_ms, send=send)
                return
            self.capacity.give(n)
        ready = [t for t in active if t in state.ready]
        if levels:  # per type, its first level that may have jobs, alone
            ready = first_levels(self.keys, ready)
        if not ready:
            # Wait for news in any stream of the group, claiming nothing.
            resp = await self.redis.xread({self.keys[t].stream: state.after[t] for t in active},
                                          count=1, block=self.block_ms)
            state.woke(self._type_of_stream(s) for s in replies.read_stream_names(resp))
            return
        n = await self.capacity.take(self._read_size)
        chosen = ready[:n]
        state.rotate(len(chosen))
        await self._claim(chosen, n, state, block=None, send=send,
                          watch=above(self.keys, chosen, levels))

    async def _claim(self, tags: list[str], n: int, state: ReadState | None, *,
                     block: int | None, send: Handoff[Delivery],
                     watch: Sequence[str] = ()) -> None:
        """One XREADGROUP over ``tags`` (one slot), at most ``n`` entries (the slots taken
        for it): COUNT applies per stream, ``n // len(tags)`` each. With ``state``, each
        stream's last id is read just before (same round trip) to learn how far it is
        delivered when it gives fewer entries than asked; so is each of ``watch`` (higher
        levels of the types read), which is ready again once it has more."""
        count = n // len(tags)
        streams: dict[Any, Any] = {self.keys[t].stream: ">" for t in tags}
        got = 0
        try:
            if state is None:
                resp = await self.redis.xreadgroup(GROUP, self.name, streams, count=count,
                                                   block=block)
                tops: list[Any] = []
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for t in (*tags, *watch):
                        pipe.xrevrange(self.keys[t].stream, count=1)
                    pipe.xreadgroup(GROUP, self.name, streams, count=count)
                    *tops, resp = await pipe.execute()
            reads = {self._type_of_stream(s): entries for s, entries in replies.stream_reads(resp)}
            got = sum(len(e) for e in reads.values())
        finally:
            self.capacity.give(n - got)  # each entry read keeps its slot until it settles
        if state is not None:
            for t, top in zip(tags, tops, strict=False):
                entries = reads.get(t, [])
                state.read(t, top[0][0].decode() if top else None,
                           entries[-1][0].decode() if entries else None, len(entries) >= count)
            state.watched(watch, [top[0][0].decode() if top else None
                                  for top in tops[len(tags):]])
        for type_, entries in reads.items():
            fetched = [Delivery(type_, e.decode(), fields) for e, fields in entries]
            if type_ in self._paused:  # paused while the read blocked: hand them back
                for d in fetched:
                    self.settler.released(type_, d.entry_id, d.job_id, idle=True)
                continue
            for d in await self._drop_duplicates(type_, fetched):
                self._outstanding[d.entry_id] = d
                send.put(d)
            self._beat_soon()

    async def _drop_duplicates(self, type_: str, fetched: list[Delivery]) -> list[Delivery]:
        """The deliveries that may run. An entry whose ``id`` has another entry's record
        (a foreign XADD reusing a job's id), or a key that is no record, never runs: it
        is dead-lettered as a duplicate id. One pipelined read per fetch, for the entries
        that carry an id the enqueue script did not claim (plain XADDs)."""
        named = [d for d in fetched if d.job_id != d.entry_id
                 and d.fields.get(Wire.ID_CLAIMED.b) != b"1"]
        if not named:
            return fetched
        tk = self.keys[type_]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for d in named:
                    pipe.hmget(tk.job(d.job_id), Rec.STATE, Rec.ENTRY)
                records = await pipe.execute(raise_on_error=False)
        except SERVER_ERRORS as e:
            if ours(e):
                raise
            # They are delivered: run them (a duplicate is still caught when it settles).
            log.warning("duplicate-id check of %s failed: %s", type_, e)
            return fetched
        duplicate = {d.entry_id for d, rec in zip(named, records, strict=True)
                     if isinstance(rec, Exception)
                     or (rec[0] is not None and rec[1] != d.entry_id.encode())}
        for d in fetched:
            if d.entry_id in duplicate:
                log.warning("entry %s of %s reuses the id %r of another job: dead-lettered "
                            "as a duplicate id, never run", d.entry_id, type_, d.job_id)
                failure = FailArgs(f"job id {d.job_id} belongs to another job",
                                   mode=Failure.DUPLICATE_ID)
                self.settler.failed(type_, d.entry_id, d.job_id, failure, idle=True)
        return [d for d in fetched if d.entry_id not in duplicate]

    def _type_of_stream(self, stream: bytes) -> str:
        """The name (``TypeKeys.name``) of one of this worker's streams."""
        return self._by_stream[stream]

    # ---- runners ---------------------------------------------------------------------

    async def _runner(self, handoff: Handoff[Delivery]) -> None:
        while True:
            try:
                d = await handoff.get()  # no suspension when work is already queued
            except HandoffClosed:
                return
            outcome = Result(Attempt.RELEASED)
            try:
                outcome = await self._attempt(d)
            finally:
                self._settle(d, outcome)
                self._slot_freed.set()

    async def _attempt(self, d: Delivery) -> Result:
        if d.lost:
            return _LOST
        if self._stopping:
            return Result(Attempt.RELEASED)
        h = self.handlers[d.type]
        try:
            context = JobContext(self.scripts, self.keys[d.type], d.job_id,
                                 settler=self.settler, tag=d.type, entry_id=d.entry_id)
            job = Job.from_fields(
                h.type, d.entry_id, d.fields,
                max_payload_bytes=self.settings.max_payload_bytes, deliveries=d.deliveries,
                context=context, job_id=d.job_id,
            )
        except DecodeError as e:
            return Result(Attempt.MALFORMED, error=f"malformed entry: {e}")
        limit_s = job.timeout or h.policy.timeout
        d.attempt, d.max_attempts = job.attempt, job.max_attempts or h.policy.max_attempts
        context.attempt = job.attempt
        f = d.fields
        if (d.cancel_requested or _EXPIRES_AT in f or _DEDUP_KEY in f
                or d.type in self._limits):  # else no await at all
            stopped = await self._before_start(d)
            if stopped is not None:
                return stopped
        self.metrics.started(d.type, job.enqueued_at)
        logs.job_started(d.type, job.id, job.attempt)
        self.settler.started(d.type, d.entry_id, d.job_id, job.attempt)
        if self._tracing is None:
            return await self._timed(h, job, d, limit_s, context)
        started = self._tracing.start(job)  # the handler runs in the attempt's span
        outcome = Result(Attempt.RELEASED)
        try:
            outcome = await self._timed(h, job, d, limit_s, context)
            return outcome
        finally:
            self._tracing.end(started, outcome)

    async def _timed(self, h: Handler, job: Job, d: Delivery, limit_s: float,
                     context: JobContext) -> Result:
        """The handler's call, timed, with a cancel asked meanwhile applied."""
        t0 = d.began = time.monotonic()
        outcome = await self._call(h, job, d, limit_s)
        if outcome.kind is Attempt.RATE_LIMITED:
            outcome = await self._hold_back(d, outcome)
        if d.cancel_requested and outcome.kind not in _NOT_CANCELLED:
            stopped = await self._stop_entry(d, StopAction.CANCEL)
            if stopped.kind is not Attempt.OK:
                outcome = stopped
            elif outcome.kind is Attempt.STOPPED:  # not cancellable after all: a failure
                outcome = Result(Attempt.RETRY, error="the attempt was stopped by a cancel")
        if context.lines:
            await self._flush_logs(context)
        elapsed = time.monotonic() - t0
        self.metrics.finished(d.type, outcome.kind, elapsed)
        logs.job_finished(d.type, job.id, job.attempt, outcome.kind, outcome.error, elapsed)
        return outcome

    async def _hold_back(self, d: Delivery, outcome: Result) -> Result:
        """``RateLimited``: hold the type's (or key's) rate window back for its seconds,
        which stop.lua honours at every start, and hand the job back (no attempt spent).
        Without that rate limit it is a RetryAfter (nothing would hold the others back)."""
        lim = self._limits.get(d.type)
        key = d.fields.get(Wire.LIMIT_KEY.b)
        if outcome.per_key:
            scope = f"k:{_scope_key(key)}" if lim and lim.key_rate and key else None
        else:
            scope = "@" if lim and lim.rate else None
        if scope is None:
            log.warning("%s %s: RateLimited without the type's %s: retried like RetryAfter",
                        d.type, d.job_id, "rate_limit_per_key and a key" if outcome.per_key
                        else "rate_limit")
            return Result(Attempt.AFTER, error=outcome.error, retry_after=outcome.retry_after)
        hold = self.keys[d.type].rate_hold(scope)
        try:
            await self.redis.set(hold, 1, px=max(1, int(outcome.retry_after * 1000)))
        except SERVER_ERRORS as e:  # the job is handed back all the same
            log.warning("%s: rate hold not written: %s", d.type, e)
        return outcome

    async def _flush_logs(self, context: JobContext) -> None:
        try:
            await context.flush()
        except SERVER_ERRORS as e:
            log.warning("log lines of %s %s not written: %s", context.tk.type, context.job_id, e)

    async def _call(self, h: Handler, job: Job, d: Delivery, limit_s: float) -> Result:
        # One cancel scope per attempt: its deadline is the timeout; shutdown (after the
        # grace period) and a lost entry cancel it too, marking the delivery first.
        # (A child process's clock starts when the child is up: see isolation.Processes.)
        isolated = d.type in self._processes
        deadline = math.inf if isolated else anyio.current_time() + limit_s
        with anyio.CancelScope(deadline=deadline) as scope:
            d.scope = scope
            outcome = await self._invoke(h, job, d, limit_s)
            if not scope.cancel_called:
                return outcome
            # a sync attempt stopped while its thread ran: the thread has returned now
            log.warning("%s %s: handler returned after its attempt was stopped; "
                        "result discarded", d.type, job.id)
        if d.lost:
            return _LOST
        if d.shutdown:
            return Result(Attempt.RELEASED)  # cancelled by shutdown after the grace period
        if d.cancel_requested:
            return Result(Attempt.STOPPED)  # _attempt ends the job cancelled
        return Result(Attempt.TIMEOUT, error=f"TimeoutError: attempt ran over {limit_s:g}s")

    async def _invoke(self, h: Handler, job: Job, d: Delivery, limit_s: float) -> Result:
        try:
            if h.is_async:
                result = await h.fn(job)
            elif d.type in self._processes:
                return await self._processes[d.type].run(h.fn, job, d.scope, limit_s)
            else:
                result = await self._in_thread(h, job, d)
            return ok(result)
        except Exception as e:
            return error_outcome(e)

    async def _in_thread(self, h: Handler, job: Job, d: Delivery) -> Any:
        # A thread cannot be stopped: a timeout (or a lost entry) waits for it, holding
        # the slot and the entry. Only shutdown stops waiting (the thread is a daemon).
        with anyio.CancelScope(shield=True) as d.waiting:
            return await self._threads.run(h.fn, job)
        await anyio.sleep_forever()  # shutdown: the attempt's own scope is cancelled

    # ---- outcomes: one small function each --------------------------------------------

    def _settle(self, d: Delivery, outcome: Result) -> None:
        """Hand the outcome to the settler (no await: runners never wait on a script): the
        entry's slot is free once the settler wrote it (or now, if nothing is to write)."""
        self._outstanding.pop(d.entry_id, None)
        self._beat_soon()
        _SETTLE[outcome.kind](self, d, outcome, not self._outstanding)
        if outcome.kind in (Attempt.LOST, Attempt.STOPPED):
            self.capacity.give()

    def _settled(self, n: int) -> None:
        """The settler wrote ``n`` outcomes: their entries left the pending list."""
        self.capacity.give(n)
        self.deps.wake()

    def _on_ok(self, d: Delivery, outcome: Result, idle: bool) -> None:
        url = d.fields.get(_WEBHOOK)
        if url is not None:
            self.notifier.job_hook(d.entry_id, url)
        self.settler.ok(d.type, d.entry_id, d.job_id, outcome.result, idle=idle,
                        attempt=d.attempt, max_attempts=d.max_attempts,
                        duration_ms=d.duration_ms())

    def _on_failure(self, d: Delivery, outcome: Result, idle: bool) -> None:
        failure = FailArgs(outcome.error, outcome.traceback, Failure(outcome.kind),
                           int(outcome.retry_after * 1000))
        url = d.fields.get(_WEBHOOK)
        if url is not None:
            self.notifier.job_hook(d.entry_id, url)
        self.settler.failed(d.type, d.entry_id, d.job_id, failure, idle=idle,
                            duration_ms=d.duration_ms())

    def _on_released(self, d: Delivery, outcome: Result, idle: bool) -> None:
        self.settler.released(d.type, d.entry_id, d.job_id, idle=idle)

    def _on_lost(self, d: Delivery, outcome: Result, idle: bool) -> None:
        pass  # the entry is another worker's now: it settles the job

    def _on_stopped(self, d: Delivery, outcome: Result, idle: bool) -> None:
        pass  # stop.lua settled it (expired, cancelled or deduplicated)

    # ---- flow control: expiry and dedup at start, cancel of a running job ---------------

    async def _before_start(self, d: Delivery) -> Result | None:
        """An entry that carries ``expires_at`` or ``dedup_key``, or of a type with
        concurrency limits, is checked by stop.lua before it runs (one call; other
        entries none); a cancel asked before it started ends it; over a limit it is
        parked. The Result when it must not run, else None."""
        action = StopAction.CANCEL if d.cancel_requested else StopAction.START
        result = await self._stop_entry(d, action)
        return None if result.kind is Attempt.OK else result

    async def _stop_entry(self, d: Delivery, action: StopAction) -> Result:
        """One entry through stop.lua. OK: it may run (START); STOPPED: it ended there;
        LOST: no longer this worker's."""
        tk, ttl = self.keys[d.type], self.settings.result_ttl * 1000
        item = StopItem(d.entry_id, d.job_id, action)
        order = self._start_order.get(d.type)

        async def call() -> list[StopResult]:
            return await retrying(f"{action} {d.type}", lambda: self.scripts.stop(
                tk, GROUP, self.name, ttl, [item], self._limits.get(d.type)), self._regroup)

        with anyio.CancelScope(shield=True):
            await self.settler.send_started(d.type, d.entry_id)  # its events come first
            if order is None:
                (res,) = await call()
            else:
                async with order:
                    (res,) = await call()
        if res.code in (Code.NOT_OWNER, Code.NOT_FOUND):
            return _LOST
        if res.code is not Code.OK or res.state == JobState.RUNNING:
            return Result(Attempt.OK)  # not ended here: runs (or ran) its normal course
        if res.state == JobState.DELAYED:  # over a concurrency limit: parked, no attempt
            self.metrics.held(d.type)
            log.debug("%s %s: held back by a concurrency limit", d.type, d.job_id)
            return Result(Attempt.STOPPED)
        counted = {JobState.EXPIRED: Outcome.EXPIRED, JobState.CANCELLED: Outcome.CANCELLED}
        outcome = counted[JobState(res.state)]
        if action is StopAction.START and outcome is Outcome.CANCELLED:
            outcome = Outcome.DEDUPLICATED
        self.metrics.outcome(d.type, outcome)
        log.info("%s %s: %s", d.type, d.job_id, outcome.value)
        return Result(Attempt.STOPPED)

    async def _cancel_watcher(self) -> None:
        """Polls the cancels set of each type with jobs in flight (one ZMSCORE per type
        every CANCEL_POLL_S, none when idle) and stops the attempts asked to stop."""
        backoff = Backoff()
        while True:
            await anyio.sleep(CANCEL_POLL_S)
            by_type: dict[str, list[Delivery]] = {}
            for d in self._outstanding.values():
                if not d.cancel_requested:
                    by_type.setdefault(d.type, []).append(d)
            try:
                for type_, ds in by_type.items():
                    scores = await self.redis.zmscore(self.keys[type_].cancels,
                                                      [d.job_id for d in ds])
                    asked = [d for d, score in zip(ds, scores, strict=True) if score is not None]
                    if asked:
                        for d in await self._still_asked(type_, asked):
                            await self._cancel_asked(d)
                backoff.reset()
            except SERVER_ERRORS as e:
                await self._recover("cancel poll failed", backoff, e)

    async def _still_asked(self, type_: str, asked: list[Delivery]) -> list[Delivery]:
        """The deliveries whose record carries the cancel mark: a request left in the set
        by a job that finished before its worker saw it must not cancel a later job that
        reuses the id (its record is new). Stale members are dropped."""
        tk = self.keys[type_]
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in asked:
                pipe.hget(tk.job(d.job_id), Rec.CANCEL)
            marks = await pipe.execute()
        stale = [d.job_id for d, mark in zip(asked, marks, strict=True) if mark is None]
        if stale:
            await self.redis.zrem(tk.cancels, *stale)
        return [d for d, mark in zip(asked, marks, strict=True) if mark is not None]

    async def _cancel_asked(self, d: Delivery) -> None:
        d.cancel_requested = True
        if d.scope is None:
            return  # not started: _before_start ends it
        if self.handlers[d.type].is_async or d.type in self._processes:
            log.info("%s %s: cancel asked, stopping the attempt", d.type, d.job_id)
            d.scope.cancel()
        else:
            log.warning("%s %s: cancel asked, but a sync handler in a thread cannot be "
                        "stopped: it runs on; a failure will not be retried", d.type, d.job_id)
            await self._stop_entry(d, StopAction.HOLD)

    # ---- housekeeping ------------------------------------------------------------------

    async def _pause_watch(self) -> None:
        """Keep :attr:`_paused` current (engine/pause.py): the fetcher skips those types."""
        tks = list(self.keys.values())
        while True:
            try:
                await self._find_levels()
                paused = await paused_types(self.redis, tks)
            except SERVER_ERRORS as e:
                if ours(e):
                    raise
                log.debug("reading the paused types failed: %s", e)
            else:
                if paused != self._paused:
                    log.info("paused types: %s", ", ".join(sorted(paused)) or "none")
                self._paused = paused
            await anyio.sleep(REFRESH_S)

    async def _scheduler(self) -> None:
        """Enqueue the due cron ticks of this worker's types (engine/schedules.py): a
        partitioned type's schedules live in, and tick into, partition 0."""
        own = [tk for tk in self.keys.values()
               if tk.partition == 0 and tk.level is Priority.NORMAL]
        await schedules.run_scheduler(self.redis, self.scripts, own)

    async def _promoter(self) -> None:
        backoff = Backoff()
        while True:
            sleep = 0.25
            try:
                for tk in self._delayed_keys:
                    moved, next_in, orphans = await self.scripts.promote(
                        tk, result_ttl_ms=self.settings.result_ttl * 1000)
                    if orphans:
                        log.error("%d delayed ids of %s had no record", orphans, tk.type)
                    if moved >= 1000:
                        sleep = 0.0
                    elif next_in >= 0:
                        sleep = min(sleep, next_in / 1000)
                backoff.reset()
            except SERVER_ERRORS as e:
                await self._recover("promote failed", backoff, e)
                continue
            await anyio.sleep(max(sleep, 0.002))

    async def _reclaimer(self, send: Handoff[Delivery]) -> None:
        backoff = Backoff()
        interval = min(h.policy.visibility_timeout for h in self.handlers.values()) / 2
        while True:
            await anyio.sleep(interval)
            try:
                for type_ in self.keys:
                    if type_ in self._live:
                        await self._reclaim(type_, send)
                await self._prune()
                backoff.reset()
            except SERVER_ERRORS as e:
                await self._recover("reclaim failed", backoff, e)

    async def _prune(self) -> None:
        """Forget consumers of dead workers once they hold nothing (hourly at most)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for tk in self._live_keys():
            n = await self.scripts.prune_consumers(tk, GROUP, int(PRUNE_IDLE_S * 1000))
            if n:
                log.info("pruned %d idle consumers of %s", n, tk.type)

    async def _reclaim(self, type_: str, send: Handoff[Delivery]) -> None:
        """Claim entries idle past the visibility timeout, with slots taken from the one
        capacity (waiting for one if the worker is full)."""
        if self._stopping:
            return
        p = self.handlers[type_].policy
        n = await self.capacity.take(100)
        try:
            res = await self.scripts.reclaim(
                self.keys[type_], GROUP, self.name, int(p.visibility_timeout * 1000),
                n, p.max_deliveries,
            )
        except BaseException:
            self.capacity.give(n)
            raise
        self.capacity.give(n - len(res.claimed))
        if res.dead_count:
            log.warning("%d poison, malformed or duplicate-id entries of %s dead-lettered",
                        res.dead_count, type_)
            self.metrics.outcome(type_, Outcome.DEAD, res.dead_count)
        for entry_id, fields, deliveries in res.claimed:
            d = Delivery(type_, entry_id, fields, deliveries)
            self._outstanding[entry_id] = d
            send.put(d)
        if res.claimed:
            self._beat_soon()
            log.info("reclaimed %d entries of %s", len(res.claimed), type_)
            self.metrics.reclaimed(type_, len(res.claimed))

    async def _toucher(self) -> None:
        vt = {t: h.policy.visibility_timeout for t, h in self.handlers.items()}
        backoff = Backoff()
        while True:
            await anyio.sleep(min(vt.values()) / 3)
            now = time.monotonic()
            try:
                for type_, tk in self.keys.items():
                    stale = [d for d in self._outstanding.values()
                             if d.type == type_ and now - d.touched_at >= vt[type_] / 3]
                    if not stale:
                        continue
                    lost = await self.scripts.touch(
                        tk, GROUP, self.name, [d.entry_id for d in stale]
                    )
                    for d in stale:
                        d.touched_at = now
                    if lost:
                        log.warning("%d running entries of %s were reclaimed elsewhere: "
                                    "cancelling them", len(lost), type_)
                        self._cancel_lost(lost)
                backoff.reset()
            except SERVER_ERRORS as e:
                await self._recover("touch failed", backoff, e)

    def _cancel_lost(self, entry_ids: list[str]) -> None:
        for entry_id in entry_ids:
            d = self._outstanding.get(entry_id)
            if d is not None:
                d.lost = True
                if d.scope is not None:
                    d.scope.cancel()

    def _beat_soon(self) -> None:
        if self._fetched is not None:
            self._fetched.set()

    def _running_now(self) -> bytes:
        """The heartbeat's ``running`` field: the oldest in-flight jobs, JSON."""
        now_wall, now_mono = time.time(), time.monotonic()
        rows = [{"type": self.keys[d.type].type, "id": d.job_id, "attempt": d.attempt,
                 "started_at": int((now_wall - (now_mono - d.fetched_at)) * 1000)}
                for d in sorted(self._outstanding.values(), key=lambda d: d.fetched_at)
                [:HEARTBEAT_RUNNING_MAX]]
        return orjson.dumps(rows)

    async def _heartbeat(self) -> None:
        key = worker_key(self.settings.prefix, self.name)
        started = int(time.time() * 1000)
        host, _, pid = self.name.partition(":")
        # By type name: a partitioned type is one type to a reader (its tags are ours).
        types = ",".join(dict.fromkeys(tk.type for tk in self.keys.values()))
        policies = orjson.dumps({h.type: asdict(h.policy) for h in self.handlers.values()})
        while True:
            self._fetched = anyio.Event()
            now = int(time.time() * 1000)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(key, mapping={
                        Heartbeat.NAME: self.name, Heartbeat.HOST: host,
                        Heartbeat.PID: pid.partition(":")[0],
                        Heartbeat.TYPES: types,
                        Heartbeat.CONCURRENCY: self.concurrency,
                        Heartbeat.IN_FLIGHT: len(self._outstanding),
                        Heartbeat.RUNNING: self._running_now(), Heartbeat.POLICIES: policies,
                        Heartbeat.STARTED_AT: started, Heartbeat.LAST_HEARTBEAT: now,
                    })
                    pipe.pexpire(key, int(HEARTBEAT_S * 3000))
                    pipe.zadd(workers_key(self.settings.prefix), {self.name: now})
                    pipe.zremrangebyscore(workers_key(self.settings.prefix), "-inf",
                                          now - int(HEARTBEAT_S * 3000))
                    await pipe.execute()
                self.metrics.heartbeat()
            except SERVER_ERRORS as e:
                if ours(e):
                    raise
                log.warning("heartbeat failed: %s: %s", type(e).__name__, e)
            await anyio.sleep(HEARTBEAT_MIN_S)
            with anyio.move_on_after(HEARTBEAT_S - HEARTBEAT_MIN_S):
                await self._fetched.wait()


def _scope_key(key: bytes) -> str:
    """A limit_key as stop.lua names its scopes (whitespace read as ``_``)."""
    return re.sub(r"\s", "_", key.decode("utf-8", "replace"))


def _limits_of(h: Handler) -> Limits:
    """A handler's concurrency limits for stop.lua: a slot's lease outlasts an attempt
    (its timeout) and the reclaim of a dead worker's job (visibility timeout), which
    renews it at its next start."""
    p = h.policy
    rate, period = parse_rate(p.rate_limit) if p.rate_limit else (0, 1000)
    key_rate, key_period = (parse_rate(p.rate_limit_per_key) if p.rate_limit_per_key
                            else (0, 1000))
    return Limits(p.max_running, p.max_running_per_key,
                  int((p.timeout + p.visibility_timeout) * 1000),
                  rate, period, key_rate, key_period)


def _client(redis: Redis | str, block_ms: int) -> Redis:
    """The worker's client; its read timeout must outlast a blocked XREADGROUP."""
    needed = block_ms / 1000 + BLOCK_MARGIN_S
    if isinstance(redis, str):
        return client_from_url(redis, socket_timeout=max(SOCKET_TIMEOUT, needed))
    timeout = socket_timeout_of(redis)
    if timeout is not None and timeout < needed:
        raise InvalidArgument(f"the client's socket_timeout ({timeout:g}s) must be at least "
                              f"block_ms/1000 + {BLOCK_MARGIN_S:g}s ({needed:g}s)")
    return redis


_LOST = Result(Attempt.LOST, error="the entry was reclaimed by another worker")

_SETTLE: dict[Attempt, Callable[[Worker, Delivery, Result, bool], None]] = {
    Attempt.OK: Worker._on_ok,
    Attempt.RETRY: Worker._on_failure,
    Attempt.AFTER: Worker._on_failure,
    Attempt.PERMANENT: Worker._on_failure,
    Attempt.TIMEOUT: Worker._on_failure,
    Attempt.MALFORMED: Worker._on_failure,
    Attempt.RELEASED: Worker._on_released,
    Attempt.RATE_LIMITED: Worker._on_released,
    Attempt.LOST: Worker._on_lost,
    Attempt.STOPPED: Worker._on_stopped,
}
#: Entry fields that make an entry go through stop.lua before it runs.
_EXPIRES_AT, _DEDUP_KEY = Wire.EXPIRES_AT.b, Wire.DEDUP_KEY.b
_WEBHOOK = Wire.WEBHOOK.b
#: Outcomes a cancel asked during the attempt leaves as they are: a completed job stays
#: completed, a lost or released one is another worker's or another attempt's.
_NOT_CANCELLED = frozenset({Attempt.OK, Attempt.LOST, Attempt.RELEASED})
