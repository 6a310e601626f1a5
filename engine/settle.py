"""The final transition of every attempt, batched: ack, fail, release; and the
``started`` events of the attempts that began since the last flush.

Runners never wait on a script: they hand their outcome to the :class:`Settler`, which
sends one ``ack``, one ``fail`` and one ``release`` call per type per flush. It flushes
when nothing fetched is still running (a fetched batch is done), when a buffer is full,
or ``DELAY`` after the first outcome, so batches grow with load and an idle worker
settles at once. A crash before a flush loses nothing: the entries are still in the
pending list and are reclaimed (at least once). Each outcome holds its entry's slot of
the worker's capacity (engine/fetch.py) until it is written: ``done(n)`` gives them back.

A call is retried through network errors, a full server and a lost group
(``reconnect.retrying``). Any other error reply is about the call's entries: the batch is
split in halves and retried until the entry that fails is alone; that one is logged and
left pending (reclaimed later, dead-lettered as poison at worst), the rest settle.

A ``started`` event waits here too (:meth:`Settler.started`): an attempt that ends before
the flush has it written by its own ack or fail (``started`` 1 in its item, first), so
a short job costs no call of its own for it; the others go in one ``started`` call per
type at the flush (at most ``DELAY`` after they began), before that flush's settles.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from redis.exceptions import RedisError, ResponseError

from streamjobs import logs
from streamjobs.codes import Code
from streamjobs.contract import Failure, JobState, Outcome
from streamjobs.keys import GROUP
from streamjobs.reconnect import retrying
from streamjobs.scripts import AckItem, FailArgs, FailItem, ReleaseItem, StartedItem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from streamjobs.keys import TypeKeys
    from streamjobs.metrics import WorkerMetrics
    from streamjobs.retry import Policy
    from streamjobs.scripts import Scripts
    from streamjobs.webhooks import Notifier

log = logging.getLogger("streamjobs.worker")

#: Outcomes per script call (Lua's unpack() limit is ~8,000 values).
CHUNK = 500
#: Refused acks looked into for the warning that says why.
_EXPLAIN_AT_MOST = 10
#: Flush at this many buffered outcomes, or this long after the first one.
BATCH = 256
DELAY = 0.002
Item = TypeVar("Item")
Res = TypeVar("Res")


@dataclass
class Batch:
    acks: list[AckItem] = field(default_factory=list)
    fails: list[FailItem] = field(default_factory=list)
    releases: list[ReleaseItem] = field(default_factory=list)
    #: Attempts begun whose ``started`` event is not written yet: entry id -> (job id,
    #: attempt, monotonic start).
    starts: dict[str, tuple[str, int, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.acks) + len(self.fails) + len(self.releases)


class Settler:
    def __init__(self, scripts: Scripts, keys: dict[str, TypeKeys], policies: dict[str, Policy],
                 consumer: str, result_ttl_ms: int, metrics: WorkerMetrics,
                 regroup: Callable[[], Awaitable[None]] | None = None,
                 done: Callable[[int], None] | None = None) -> None:
        self.scripts, self.keys, self.policies = scripts, keys, policies
        self.done = done if done is not None else _nothing
        self.consumer, self.result_ttl_ms, self.metrics = consumer, result_ttl_ms, metrics
        self.regroup = regroup
        self._batches: dict[str, Batch] = {}
        #: Told of every settled ack and fail when a webhook may want them (webhooks.py).
        self.notifier: Notifier | None = None

    def open(self) -> None:
        """anyio events belong to the running loop: made when the worker starts."""
        self._pending = anyio.Event()
        self._ready = anyio.Event()
        #: Held while ``started`` events are sent: an event of the attempt's own that
        #: does not go through here (progress, a cancel) waits for its ``started``.
        self._starts_lock = anyio.Lock()

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches.values())

    def _batch(self, type_: str) -> Batch:
        b = self._batches.get(type_)
        if b is None:
            b = self._batches[type_] = Batch()
        return b

    def _added(self, batch: Batch, idle: bool) -> None:
        self._pending.set()
        if idle or len(batch) >= BATCH:
            self._ready.set()

    def started(self, type_: str, entry_id: str, job_id: str, attempt: int) -> None:
        """An attempt began: its ``started`` event goes with the next flush, or with its
        own settle if that comes first."""
        self._batch(type_).starts[entry_id] = (job_id, attempt, time.monotonic())
        self._pending.set()

    def ok(self, type_: str, entry_id: str, job_id: str, result: bytes, *, idle: bool,
           attempt: int = 1, max_attempts: int = 0, duration_ms: int = -1) -> None:
        b = self._batch(type_)
        started = 1 if b.starts.pop(entry_id, None) is not None else 0
        b.acks.append(AckItem(entry_id, job_id, result, attempt, max_attempts, duration_ms,
                              started))
        self._added(b, idle)

    def failed(self, type_: str, entry_id: str, job_id: str, failure: FailArgs, *,
               idle: bool, duration_ms: int = -1, started: int = 0) -> None:
        b = self._batch(type_)
        if b.starts.pop(entry_id, None) is not None:
            started = 1
        b.fails.append(FailItem(entry_id, job_id, failure, random.random(), duration_ms,
                                started))
        self._added(b, idle)

    def released(self, type_: str, entry_id: str, job_id: str, *, idle: bool) -> None:
        b = self._batch(type_)
        b.starts.pop(entry_id, None)  # handed back: its start is no event
        b.releases.append(ReleaseItem(entry_id, job_id))
        self._added(b, idle)

    async def send_started(self, type_: str, entry_id: str) -> None:
        """Write one attempt's ``started`` event now if it is still waiting here (before
        an event of its own sent another way); a flush sending it is waited for."""
        async with self._starts_lock:
            b = self._batches.get(type_)
            start = b.starts.pop(entry_id, None) if b is not None else None
            if start is not None:
                await self._started(type_, {entry_id: start})

    async def run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            with anyio.move_on_after(DELAY):
                await self._ready.wait()
            self._ready = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        batches, self._batches = self._batches, {}
        async with self._starts_lock:  # each type's before any settle of this flush
            for type_, b in batches.items():
                if b.starts:
                    await self._started(type_, b.starts)
        for type_, b in batches.items():
            for i in range(0, len(b.acks), CHUNK):
                await self._ack(type_, b.acks[i : i + CHUNK])
            for i in range(0, len(b.fails), CHUNK):
                await self._fail(type_, b.fails[i : i + CHUNK])
            for i in range(0, len(b.releases), CHUNK):
                await self._release(type_, b.releases[i : i + CHUNK])

    async def flush_all(self) -> None:
        while self._batches:
            await self.flush()

    async def _settled(self, what: str, type_: str, items: Sequence[Item],
                       call: Callable[[Sequence[Item]], Awaitable[list[Res]]],
                       ) -> list[Res | None]:
        """``call(items)``'s results, in order; None for an entry the server refused with
        an error reply of its own (split out by halving the batch; logged, left pending)."""
        try:
            return list(await retrying(what, lambda: call(items), self.regroup))
        except ResponseError as e:
            if len(items) == 1:
                log.error("%s of an entry of %s failed on the server: %s: %s; the entry stays "
                          "pending (reclaimed later, dead-lettered as poison at worst): %r",
                          what, type_, type(e).__name__, e, items[0])
                return [None]
            mid = len(items) // 2
            return (await self._settled(what, type_, items[:mid], call)
                    + await self._settled(what, type_, items[mid:], call))

    async def _started(self, type_: str, starts: dict[str, tuple[str, int, float]]) -> None:
        """The ``started`` events (an error costs the events, never the jobs)."""
        now, tk = time.monotonic(), self.keys[type_]
        items = [StartedItem(job_id, attempt, int((now - t0) * 1000))
                 for job_id, attempt, t0 in starts.values()]
        for i in range(0, len(items), CHUNK):
            chunk = items[i : i + CHUNK]
            try:
                await retrying("started", lambda c=chunk: self.scripts.started(  # type: ignore[misc]
                    tk, self.consumer, c), self.regroup)
            except ResponseError as e:
                log.warning("%d started events of %s not written: %s", len(chunk), type_, e)

    async def _ack(self, type_: str, done: list[AckItem]) -> None:
        tk, ttl = self.keys[type_], self.result_ttl_ms
        await self._record(type_, [(i.entry_id, i.job_id) for i in done])
        codes = await self._settled(
            "ack", type_, done, lambda items: self.scripts.ack(tk, GROUP, self.consumer, ttl, items)
        )
        notifier = self.notifier
        if notifier is not None and notifier.active:
            notifier.completed(type_, done, codes)
        # ALREADY: this very ack ran before and its reply was lost (a replay): completed.
        ok = codes.count(Code.OK) + codes.count(Code.ALREADY)
        self.metrics.outcome(type_, Outcome.COMPLETED, ok)
        refused = [i.entry_id for i, c in zip(done, codes, strict=True) if c is Code.NOT_OWNER]
        if refused:
            log.warning("%d acks of %s refused: %s", len(refused), type_,
                        await self._why_not_owner(tk, refused))
            self.metrics.outcome(type_, Outcome.ACK_REFUSED, len(refused))
        # WRONG_STATE: the job's record is another entry's (a foreign XADD reused its id):
        # the entry must not stay pending; fail.lua dead-letters it as a duplicate id
        # (the fail holds the entry's slot from here).
        carried = 0
        for item, code in zip(done, codes, strict=True):
            if code is Code.WRONG_STATE:
                carried += 1
                self.failed(type_, item.entry_id, item.job_id, FailArgs(
                    f"job id {item.job_id} belongs to another job", mode=Failure.DUPLICATE_ID,
                ), idle=True, duration_ms=item.duration_ms, started=item.started)
        self.done(len(done) - carried)

    async def _why_not_owner(self, tk: TypeKeys, entries: list[str]) -> str:
        """What became of entries this consumer no longer holds (a rare path: a few reads).
        Pending for another consumer: reclaimed. Pending for none but still in the stream:
        the server forgot the read that delivered it (a failover to a replica that had not
        received it, or a restart that lost recent writes); it is delivered again. Gone
        from the stream: settled by whoever reclaimed it, or cancelled or deleted."""
        reclaimed: set[str] = set()
        forgotten = gone = 0
        try:
            for entry in entries[:_EXPLAIN_AT_MOST]:
                rows = await self.scripts.redis.xpending_range(tk.stream, GROUP, entry, entry, 1)
                if rows:
                    owner = rows[0]["consumer"]
                    reclaimed.add(owner.decode() if isinstance(owner, bytes) else str(owner))
                elif await self.scripts.redis.xrange(tk.stream, entry, entry, 1):
                    forgotten += 1
                else:
                    gone += 1
        except RedisError as e:
            return f"not held by this worker any more (not looked into: {e})"
        parts = []
        if reclaimed:
            parts.append(f"reclaimed by {', '.join(sorted(reclaimed))}")
        if forgotten:
            parts.append(f"{forgotten} delivered to no one on the server (a failover or "
                         "restart lost the read that delivered them; they run again)")
        if gone:
            parts.append(f"{gone} no longer in the stream (settled by the worker that "
                         "reclaimed them, or cancelled)")
        unread = len(entries) - _EXPLAIN_AT_MOST
        if unread > 0:
            parts.append(f"{unread} more not looked into")
        return "; ".join(parts)

    async def _fail(self, type_: str, failed: list[FailItem]) -> None:
        tk, p = self.keys[type_], self.policies[type_]
        await self._record(type_, [(i.entry_id, i.job_id) for i in failed])
        results = await self._settled("fail", type_, failed, lambda items: self.scripts.fail(
            tk, GROUP, self.consumer, items, max_attempts=p.max_attempts,
            immediate_retries=p.immediate_retries,
            backoff_base_ms=int(p.backoff_base * 1000),
            backoff_cap_ms=int(p.backoff_cap * 1000), jitter=p.jitter,
        ))
        notifier = self.notifier
        if notifier is not None and notifier.active:
            notifier.failed(type_, failed, results)
        refused = [r for r in results if r is not None and r.code is not Code.OK]
        if refused:
            log.warning("%d failures of %s refused (%s)", len(refused), type_,
                        ", ".join(sorted({r.code.name for r in refused})))
        counts = dict.fromkeys(Outcome, 0)
        for item, r in zip(failed, results, strict=True):
            if r is None or r.code is not Code.OK:
                continue
            counts[_counted_as(item.mode, r.state)] += 1
            if r.state == JobState.DEAD:
                logs.job_dead(type_, item.job_id, r.attempts, item.failure.error)
        for outcome, n in counts.items():
            self.metrics.outcome(type_, outcome, n)
        self.done(len(failed))

    async def _record(self, type_: str, entries: list[tuple[str, str]]) -> None:
        """Entries whose settle may call webhooks go into their outbox first (no call
        when no webhook can apply: the plain path)."""
        notifier = self.notifier
        if notifier is not None and notifier.active:
            await retrying("webhook outbox", lambda: notifier.record(type_, entries),
                           self.regroup)

    async def _release(self, type_: str, entries: list[ReleaseItem]) -> None:
        tk = self.keys[type_]
        codes: list[Any] = await self._settled(
            "release", type_, entries,
            lambda items: self.scripts.release(tk, GROUP, self.consumer, items),
        )
        self.metrics.released(type_, codes.count(Code.OK))
        self.done(len(entries))


def _nothing(n: int) -> None:
    pass


def _counted_as(mode: Failure, state: str) -> Outcome:
    """The one label a settled failure counts under: a timeout is counted as such only."""
    if mode is Failure.TIMEOUT:
        return Outcome.TIMEOUT
    return Outcome.DEAD if state == JobState.DEAD else Outcome.RETRIED
