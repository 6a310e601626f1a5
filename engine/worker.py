"""The worker: one anyio task group of small named roles.

    fetcher ──memory stream──► runners (fixed set, = concurrency) ──► acker (batched)
                                        └─ failures ──► fail script
    housekeeping: promoter, reclaimer, toucher, heartbeat

The fetcher never asks for more entries than there are free slots, so a crash strands
at most this worker's own in-flight jobs. Every transition is one script call;
outcomes are a table of small functions (``_SETTLE``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
import traceback as tb_mod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine import replies
from engine.codes import Code
from engine.config import Settings
from engine.connection import client_from_url
from engine.errors import DecodeError, PermanentError, RetryAfter
from engine.job import Job, dumps
from engine.keys import GROUP, TypeKeys, types_key, worker_key, workers_key
from engine.metrics import WorkerMetrics
from engine.producer import ensure_group
from engine.registry import Handler, Registry, default_registry
from engine.scripts import FailArgs, Scripts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from anyio.abc import TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from redis.asyncio import Redis

log = logging.getLogger("streamjobs.worker")
NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
HEARTBEAT_S = 5.0
#: Jobs per ack script call (Lua's unpack() limit is ~8,000 values).
ACK_CHUNK = 1000
#: Flush the ack buffer at this size, or this long after its first completion.
ACK_BATCH = 256
ACK_DELAY = 0.002
#: Consumers idle this long with nothing pending are removed from the group.
PRUNE_IDLE_S = 3600.0
PRUNE_EVERY_S = 300.0


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
    #: Set when shutdown cancels the attempt (as opposed to its timeout).
    shutdown: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # ok | retry | after | permanent | timeout | malformed | released
    result: bytes = b""
    error: str = ""
    traceback: str = ""
    retry_after: float = 0.0


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Backoff:
    """Capped exponential backoff for reconnecting."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.delay = base, cap, base

    async def wait(self, what: str, err: BaseException) -> None:
        log.warning("%s: %s; retrying in %.2fs", what, err, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.base


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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.settings = settings or Settings()
        self.registry = registry if registry is not None else default_registry
        chosen = list(types) if types else self.registry.types()
        if not chosen:
            raise ValueError("no job types to consume: register a handler first")
        self.handlers: dict[str, Handler] = {t: self.registry.get(t) for t in chosen}
        self.keys = {t: TypeKeys(self.settings.prefix, t) for t in chosen}
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = client_from_url(redis) if isinstance(redis, str) else redis
        self.scripts = Scripts(self.redis)
        self.concurrency = concurrency
        self.grace_period = grace_period
        self.block_ms = block_ms
        self.metrics = metrics or WorkerMetrics()
        self.name = name or consumer_name()
        self._outstanding: dict[str, Delivery] = {}
        self._stopping = False
        self._stop_requested = False
        self._order = list(self.keys)
        self._acks: dict[str, list[tuple[str, str, bytes]]] = {}
        self._pruned_at = -PRUNE_EVERY_S

    def _open_runtime(self) -> None:
        """anyio primitives belong to a running event loop: made when run() starts."""
        self._slot_freed = anyio.Event()
        self._stop = anyio.Event()
        self._fetch_scope = anyio.CancelScope()
        self._ack_ready = anyio.Event()
        self._ack_pending = anyio.Event()
        self._thread_limiter = anyio.CapacityLimiter(self.concurrency)
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
        send, recv = anyio.create_memory_object_stream[Delivery](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.concurrency):
                    tg.start_soon(self._runner, recv.clone())
                tg.start_soon(self._fetcher, send)
                tg.start_soon(self._reclaimer, send.clone())
                for role in (self._acker, self._promoter, self._toucher, self._heartbeat):
                    tg.start_soon(role)
                task_status.started()
                await self._stop.wait()
                await self._shutdown()
                tg.cancel_scope.cancel()
        finally:
            recv.close()
            with anyio.CancelScope(shield=True):
                await self._leave()

    async def _setup(self) -> None:
        backoff = Backoff()
        while True:
            try:
                for tk in self.keys.values():
                    await ensure_group(self.redis, tk)
                await self.redis.sadd(types_key(self.settings.prefix), *self.keys)
                return
            except NETWORK_ERRORS as e:
                await backoff.wait("server unreachable at start", e)

    async def _shutdown(self) -> None:
        self._stopping = True
        self._fetch_scope.cancel()
        log.info("stopping: %d in flight, grace %.1fs", self.in_flight, self.grace_period)
        with anyio.move_on_after(self.grace_period):
            await self._drained()
        for d in list(self._outstanding.values()):
            if d.scope is not None:
                d.shutdown = True
                d.scope.cancel()
        with anyio.move_on_after(10):
            await self._drained()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self._flush_acks_until_empty()
            await self._release_leftovers()

    async def _release_leftovers(self) -> None:
        """Entries still in this consumer's pending list (a fetch cut short by shutdown
        was delivered but never seen) go back to the stream."""
        for type_, tk in self.keys.items():
            try:
                rows = replies.pending_rows(await self.redis.xpending_range(
                    tk.stream, GROUP, "-", "+", 10_000, consumername=self.name
                ))
                if not rows:
                    continue
                ids = [row["message_id"].decode() for row in rows]
                found = replies.entries(await self.redis.xrange(tk.stream, ids[0], ids[-1]))
                job_ids = {e.decode(): _job_id(Delivery(type_, e.decode(), f)) for e, f in found}
                entries = [(i, job_ids.get(i, i)) for i in ids]
                codes = await self.scripts.release(tk, GROUP, self.name, entries)
                self.metrics.released(type_, codes.count(Code.OK))
            except NETWORK_ERRORS as e:
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
        except NETWORK_ERRORS:
            pass
        if self._owns_client:
            await self.redis.aclose()

    # ---- fetcher ---------------------------------------------------------------------

    async def _fetcher(self, send: MemoryObjectSendStream[Delivery]) -> None:
        backoff = Backoff()
        async with send:
            with self._fetch_scope:
                while not self._stopping:
                    free = self.concurrency - len(self._outstanding)
                    if free <= 0:
                        self._slot_freed = anyio.Event()
                        await self._slot_freed.wait()
                        continue
                    try:
                        await self._fetch_once(send, free)
                        backoff.reset()
                    except NETWORK_ERRORS as e:
                        await backoff.wait("fetch failed", e)

    async def _fetch_once(self, send: MemoryObjectSendStream[Delivery], free: int) -> None:
        # COUNT applies per stream: read at most `free` streams, free // n entries each,
        # rotating which streams go first so no type starves.
        self._order = self._order[1:] + self._order[:1]
        chosen = self._order[: min(free, len(self._order))]
        try:
            resp = await self.redis.xreadgroup(
                GROUP, self.name, {self.keys[t].stream: ">" for t in chosen},
                count=free // len(chosen), block=self.block_ms,
            )
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self._setup()  # the stream was deleted, or the server lost its data
            return
        for stream, entries in replies.stream_reads(resp):
            type_ = self._type_of_stream(stream)
            for entry_id, fields in entries:
                d = Delivery(type_, entry_id.decode(), fields)
                self._outstanding[d.entry_id] = d
                await send.send(d)

    def _type_of_stream(self, stream: bytes) -> str:
        # sj:{TYPE}:stream
        name = stream.decode()
        return name[name.index("{") + 1 : name.rindex("}")]

    # ---- runners ---------------------------------------------------------------------

    async def _runner(self, recv: MemoryObjectReceiveStream[Delivery]) -> None:
        async with recv:
            while True:
                try:  # fast path: no suspension when work is already queued
                    d = recv.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        d = await recv.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                try:
                    outcome = await self._attempt(d)
                    if outcome.kind == "ok":
                        self._on_ok(d, outcome)
                    else:
                        with anyio.CancelScope(shield=True):
                            await self._settle(d, outcome)
                finally:
                    self._outstanding.pop(d.entry_id, None)
                    self._slot_freed.set()

    async def _attempt(self, d: Delivery) -> Outcome:
        if self._stopping:
            return Outcome("released")
        h = self.handlers[d.type]
        try:
            job = Job.from_fields(
                d.type, d.entry_id, d.fields,
                max_payload_bytes=self.settings.max_payload_bytes, deliveries=d.deliveries,
            )
        except DecodeError as e:
            return Outcome("malformed", error=f"malformed entry: {e}")
        timeout = job.timeout or h.policy.timeout
        self.metrics.started(d.type, job.enqueued_at)
        t0 = time.perf_counter()
        outcome = await self._call(h, job, d, timeout)
        self.metrics.finished(d.type, outcome.kind, time.perf_counter() - t0)
        return outcome

    async def _call(self, h: Handler, job: Job, d: Delivery, limit_s: float) -> Outcome:
        # One cancel scope per attempt: its deadline is the timeout, and shutdown cancels
        # it after the grace period (marking the delivery first).
        with anyio.CancelScope(deadline=anyio.current_time() + limit_s) as scope:
            d.scope = scope
            try:
                if h.is_async:
                    result = await h.fn(job)
                else:
                    result = await anyio.to_thread.run_sync(
                        h.fn, job, abandon_on_cancel=True, limiter=self._thread_limiter
                    )
                return Outcome("ok", result=dumps(result) if result is not None else b"")
            except PermanentError as e:
                return _failure("permanent", e)
            except RetryAfter as e:
                return _failure("after", e, retry_after=e.seconds)
            except Exception as e:
                return _failure("retry", e)
        if d.shutdown:
            return Outcome("released")  # cancelled by shutdown after the grace period
        return Outcome("timeout", error=f"TimeoutError: attempt ran over {limit_s:g}s")

    # ---- outcomes: one small function each --------------------------------------------

    async def _settle(self, d: Delivery, outcome: Outcome) -> None:
        """Every outcome but ok (which only joins the ack buffer) is one script call."""
        await _SETTLE[outcome.kind](self, d, outcome)

    def _on_ok(self, d: Delivery, outcome: Outcome) -> None:
        buf = self._acks.setdefault(d.type, [])
        buf.append((d.entry_id, _job_id(d), outcome.result))
        self._outstanding.pop(d.entry_id, None)
        self._ack_pending.set()
        if not self._outstanding or len(buf) >= ACK_BATCH:
            self._ack_ready.set()

    async def _on_failure(self, d: Delivery, outcome: Outcome) -> None:
        mode = {"after": "after", "permanent": "dead", "malformed": "malformed"}.get(
            outcome.kind, "retry"
        )
        failure = FailArgs(outcome.error, outcome.traceback, mode,
                           int(outcome.retry_after * 1000))
        p = self.handlers[d.type].policy
        res = await self._retrying(
            "fail",
            lambda: self.scripts.fail(
                self.keys[d.type], GROUP, self.name, d.entry_id, _job_id(d), failure,
                max_attempts=p.max_attempts, immediate_retries=p.immediate_retries,
                backoff_base_ms=int(p.backoff_base * 1000),
                backoff_cap_ms=int(p.backoff_cap * 1000), jitter=p.jitter,
                rand=random.random(),
            ),
        )
        if res.code is not Code.OK:
            log.warning("fail of %s/%s refused: %s", d.type, d.entry_id, res.code.name)
        else:
            self.metrics.outcome(d.type, "dead" if res.outcome == "dead" else "retried")

    async def _on_released(self, d: Delivery, outcome: Outcome) -> None:
        codes = await self._retrying(
            "release",
            lambda: self.scripts.release(
                self.keys[d.type], GROUP, self.name, [(d.entry_id, _job_id(d))]
            ),
        )
        self.metrics.released(d.type, codes.count(Code.OK))

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one script call, retrying through lost connections (never drop an outcome)."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except NETWORK_ERRORS as e:
                await backoff.wait(what, e)

    # ---- acker: batched acks, one script call per type per flush ----------------------

    async def _acker(self) -> None:
        # Flush when nothing fetched is still running (a whole fetched batch is done), when
        # the buffer is full, or ACK_DELAY after the first completion: batches grow with
        # load, and an idle worker acks at once.
        while True:
            await self._ack_pending.wait()
            self._ack_pending = anyio.Event()
            with anyio.move_on_after(ACK_DELAY):
                await self._ack_ready.wait()
            self._ack_ready = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self._flush_acks()

    async def _flush_acks(self) -> None:
        batch, self._acks = self._acks, {}
        for type_, all_done in batch.items():
            for i in range(0, len(all_done), ACK_CHUNK):
                await self._ack_chunk(type_, all_done[i : i + ACK_CHUNK])

    async def _ack_chunk(self, type_: str, done: list[tuple[str, str, bytes]]) -> None:
        ttl_ms = self.settings.result_ttl * 1000
        codes = await self._retrying(
            "ack", lambda: self.scripts.ack(self.keys[type_], GROUP, self.name, ttl_ms, done)
        )
        ok = codes.count(Code.OK)
        self.metrics.outcome(type_, "completed", ok)
        if ok != len(codes):
            log.warning("%d acks of %s refused (entries reclaimed by another worker)",
                        len(codes) - ok, type_)
            self.metrics.outcome(type_, "ack_refused", len(codes) - ok)

    async def _flush_acks_until_empty(self) -> None:
        while self._acks:
            await self._flush_acks()

    # ---- housekeeping ------------------------------------------------------------------

    async def _promoter(self) -> None:
        backoff = Backoff()
        while True:
            sleep = 0.25
            try:
                for tk in self.keys.values():
                    moved, next_in, orphans = await self.scripts.promote(tk)
                    if orphans:
                        log.error("%d delayed ids of %s had no record", orphans, tk.type)
                    if moved >= 1000:
                        sleep = 0.0
                    elif next_in >= 0:
                        sleep = min(sleep, next_in / 1000)
                backoff.reset()
            except NETWORK_ERRORS as e:
                await backoff.wait("promote failed", e)
                continue
            await anyio.sleep(max(sleep, 0.002))

    async def _reclaimer(self, send: MemoryObjectSendStream[Delivery]) -> None:
        backoff = Backoff()
        interval = min(h.policy.visibility_timeout for h in self.handlers.values()) / 2
        async with send:
            while True:
                await anyio.sleep(interval)
                try:
                    for type_ in self.keys:
                        await self._reclaim(type_, send)
                    await self._prune()
                    backoff.reset()
                except NETWORK_ERRORS as e:
                    await backoff.wait("reclaim failed", e)

    async def _prune(self) -> None:
        """Forget consumers of dead workers once they hold nothing (hourly at most)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for tk in self.keys.values():
            n = await self.scripts.prune_consumers(tk, GROUP, int(PRUNE_IDLE_S * 1000))
            if n:
                log.info("pruned %d idle consumers of %s", n, tk.type)

    async def _reclaim(self, type_: str, send: MemoryObjectSendStream[Delivery]) -> None:
        free = self.concurrency - len(self._outstanding)
        if free <= 0 or self._stopping:
            return
        p = self.handlers[type_].policy
        res = await self.scripts.reclaim(
            self.keys[type_], GROUP, self.name, int(p.visibility_timeout * 1000),
            min(free, 100), p.max_deliveries,
        )
        if res.dead:
            log.warning("%d poison entries of %s dead-lettered", res.dead, type_)
            self.metrics.outcome(type_, "dead", res.dead)
        for entry_id, fields, deliveries in res.claimed:
            d = Delivery(type_, entry_id, fields, deliveries)
            self._outstanding[entry_id] = d
            await send.send(d)
        if res.claimed:
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
                        log.warning("%d running entries of %s were reclaimed elsewhere",
                                    len(lost), type_)
                backoff.reset()
            except NETWORK_ERRORS as e:
                await backoff.wait("touch failed", e)

    async def _heartbeat(self) -> None:
        key = worker_key(self.settings.prefix, self.name)
        started = int(time.time() * 1000)
        host, _, pid = self.name.partition(":")
        while True:
            now = int(time.time() * 1000)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(key, mapping={
                        "name": self.name, "host": host, "pid": pid.partition(":")[0],
                        "types": ",".join(self.keys), "concurrency": self.concurrency,
                        "in_flight": len(self._outstanding), "started_at": started,
                        "last_heartbeat": now,
                    })
                    pipe.pexpire(key, int(HEARTBEAT_S * 3000))
                    pipe.zadd(workers_key(self.settings.prefix), {self.name: now})
                    pipe.zremrangebyscore(workers_key(self.settings.prefix), "-inf",
                                          now - int(HEARTBEAT_S * 3000))
                    await pipe.execute()
                self.metrics.heartbeat()
            except NETWORK_ERRORS as e:
                log.warning("heartbeat failed: %s", e)
            await anyio.sleep(HEARTBEAT_S)


def _job_id(d: Delivery) -> str:
    raw = d.fields.get(b"id")
    return raw.decode("utf-8", "replace") if raw else d.entry_id


def _failure(kind: str, e: BaseException, retry_after: float = 0.0) -> Outcome:
    error = f"{type(e).__name__}: {e}"[:2000]
    tb = "".join(tb_mod.format_exception(e))[-8000:]
    return Outcome(kind, error=error, traceback=tb, retry_after=retry_after)


_SETTLE: dict[str, Callable[[Worker, Delivery, Outcome], Awaitable[None]]] = {
    "retry": Worker._on_failure,
    "after": Worker._on_failure,
    "permanent": Worker._on_failure,
    "timeout": Worker._on_failure,
    "malformed": Worker._on_failure,
    "released": Worker._on_released,
}
