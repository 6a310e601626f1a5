"""Job dependencies across slots: a job that waits for others (``after``) and how it
learns they ended.

A child and its parents may live in different types, hence different cluster slots, so
no one script can touch both. Every step is one script on one slot and idempotent, and
whatever a crash cuts short is redone from what the server holds:

1. **enqueue** (child's slot): the child is ``blocked``: its fields stashed in its record
   with ``deps_left``, its id in its type's ``blocked`` set; ``depends_on`` names its
   parents as ``<tag>/<id>`` refs.
2. **depend** (each parent's slot), by the producer right after: an active parent keeps
   the child's ref in its ``dependents`` set and a mark in its record; a parent that has
   ended answers its final state (and result), which the producer passes on (3).
3. **parent_done** (child's slot): counts a parent once (``dep:<ref>`` in the record),
   applies ``on_parent_failure``, and the last one moves the child to its stream with
   ``parent_results`` and ``parent_states``.

When a marked parent ends, the script that ends it writes its id and state into its
type's dependency outbox (``lua/includes/dependents.lua``). :class:`DependencyRelay`, run
by every worker of the type, reads the outbox after its settles (:data:`RELAY_MIN_S`
apart) and every :data:`RELAY_S`, calls
``parent_done`` for each dependent, then clears the parent's outbox field and set. A
crash between leaves the outbox field: the next pass redoes it (``parent_done`` counts a
parent once).

The step a crash can lose is (2): a child enqueued, its registration never made. The
relay of the child's type also sweeps its ``blocked`` set: a child whose registration is
older than :data:`RECHECK_MS` is registered again with every parent it has not heard
from (``depend`` is idempotent), which also tells it of a parent that ended meanwhile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import orjson

from streamjobs import replies
from streamjobs.codes import Code
from streamjobs.contract import DEP_STATE, STASH_B, Priority, Wire
from streamjobs.counts import server_ms
from streamjobs.errors import InvalidArgument
from streamjobs.keys import TypeKeys, split_tag
from streamjobs.reconnect import SERVER_ERRORS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from redis.asyncio import Redis

    from streamjobs.scripts import Scripts

log = logging.getLogger("streamjobs.deps")

#: A worker reads its types' dependency outboxes after each of its settles (a parent it
#: settled may have dependents), at most every RELAY_MIN_S, and every RELAY_S anyway (a
#: parent ended elsewhere: cancelled by the API, expired by another worker's promote).
RELAY_MIN_S = 0.002
RELAY_S = 0.25
#: How often it sweeps its types' blocked sets, and how old a registration is made again.
SWEEP_S = 5.0
RECHECK_MS = 30_000
#: The state a parent is reported in when its record is gone (expired or deleted).
GONE = "gone"

#: Parents one job may have (``enqueue.lua``'s MAX_PARENTS).
MAX_PARENTS = 10_000

#: A parent as the caller names it: ``(type, id)`` or ``"type/id"``.
JobRef = tuple[str, str] | str


def parse_ref(ref: JobRef) -> tuple[str, str]:
    """``(type, id)`` of a parent reference; InvalidArgument when it is none."""
    if isinstance(ref, str):
        type_, sep, job_id = ref.partition("/")
        if not sep:
            raise InvalidArgument(f"a parent is 'type/id' or (type, id), not {ref!r}")
        return type_, job_id
    if isinstance(ref, tuple) and len(ref) == 2 and all(isinstance(x, str) for x in ref):
        return ref[0], ref[1]
    raise InvalidArgument(f"a parent is 'type/id' or (type, id), not {ref!r}")


def ref_of(tk: TypeKeys, job_id: str) -> str:
    """The ref of a job in the wire format: its hash tag (type or ``type#partition``)."""
    return f"{tk.tag}/{job_id}"


def keys_of_ref(prefix: str, ref: str) -> tuple[TypeKeys, str]:
    """The keys (of the right partition) and id a ref names."""
    tag, _, job_id = ref.partition("/")
    type_, partition = split_tag(tag)
    return TypeKeys(prefix, type_, partition), job_id


async def find_parents(redis: Redis, prefix: str, parents: Sequence[JobRef],
                       partitions: Callable[[str], Awaitable[int]]
                       ) -> list[tuple[TypeKeys, str]]:
    """Each parent's keys (the partition holding its record) and id, looked up in one
    pipeline; ``partitions`` gives a type's partition count. InvalidArgument for a parent
    that has no record: a typo, or one whose retention is over."""
    if len(parents) > MAX_PARENTS:
        raise InvalidArgument(f"a job waits for at most {MAX_PARENTS} parents")
    refs = [parse_ref(ref) for ref in parents]
    candidates: list[tuple[TypeKeys, str]] = []
    for type_, job_id in refs:
        tk = TypeKeys(prefix, type_)
        candidates += [(part, job_id) for part in tk.partitions(await partitions(type_))]
    async with redis.pipeline(transaction=False) as pipe:
        for tk, job_id in candidates:
            pipe.exists(tk.job(job_id))
        exists = await pipe.execute()
    where = {(tk.type, job_id): tk for (tk, job_id), n in zip(candidates, exists, strict=True)
             if n}
    found: list[tuple[TypeKeys, str]] = []
    for type_, job_id in refs:
        if (type_, job_id) not in where:
            raise InvalidArgument(f"parent {type_}/{job_id} is not known (no record: never "
                                  "enqueued, or its result retention is over)")
        found.append((where[type_, job_id], job_id))
    if len({ref_of(tk, j) for tk, j in found}) != len(found):
        raise InvalidArgument("a parent is named twice")
    return found


def depends_on_field(parents: Iterable[tuple[TypeKeys, str]]) -> bytes:
    return orjson.dumps([ref_of(tk, j) for tk, j in parents])


async def register(scripts: Scripts, child: TypeKeys, child_id: str,
                   parents: Iterable[tuple[TypeKeys, str]], result_ttl_ms: int) -> str:
    """Step 2 for a child just enqueued blocked: register it with each parent, passing on
    the end of those that have ended. Returns the child's state after."""
    state = "blocked"
    parents = list(parents)
    if not parents:
        return state
    answers = await scripts.depend(parents, ref_of(child, child_id))
    for (ptk, pid), (code, pstate, result) in zip(parents, answers, strict=True):
        if code is Code.OK:
            continue
        _, state = await scripts.parent_done(
            child.at(Priority.NORMAL), child_id, ref_of(ptk, pid),
            pstate if code is Code.ALREADY else GONE, result, result_ttl_ms)
    return state


class DependencyRelay:
    """A worker's relay of its types' ended parents to their dependents, and its sweep of
    their blocked jobs (the module docstring)."""

    def __init__(self, redis: Redis, scripts: Scripts, prefix: str, keys: Iterable[TypeKeys],
                 result_ttl_ms: int) -> None:
        self.redis, self.scripts, self.prefix = redis, scripts, prefix
        # One outbox and one blocked set per type and partition (every level shares them).
        self.keys = list(dict.fromkeys(tk.at(Priority.NORMAL) for tk in keys))
        self.result_ttl_ms = result_ttl_ms
        self._swept_at = 0.0
        self._settled: anyio.Event | None = None
        #: The types that had a dependent registered lately (``deps_seen``): only their
        #: settles wake the relay, so a worker whose types have none pays a read every
        #: RELAY_S and nothing per settle.
        self._parents: list[TypeKeys] = []

    def wake(self) -> None:
        """Jobs were settled: one of them may have been a parent."""
        if self._settled is not None and self._parents:
            self._settled.set()

    async def run(self) -> None:
        while True:
            self._settled = anyio.Event()
            try:
                await self.relay()
                if anyio.current_time() - self._swept_at >= SWEEP_S:
                    self._swept_at = anyio.current_time()
                    await self.sweep()
            except SERVER_ERRORS as e:
                log.warning("dependency relay failed (tried again): %s", e)
            await anyio.sleep(RELAY_MIN_S)
            with anyio.move_on_after(RELAY_S):
                await self._settled.wait()

    async def relay(self) -> int:
        """One pass over the outboxes; returns how many ended parents it handled."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tk in self.keys:
                pipe.hlen(tk.dep_outbox)
                pipe.exists(tk.deps_seen)
            replies_ = await pipe.execute()
        sizes, seen = replies_[0::2], replies_[1::2]
        self._parents = [tk for tk, n in zip(self.keys, seen, strict=True) if n]
        done = 0
        for tk, size in zip(self.keys, sizes, strict=True):
            if size:
                outbox = replies.hash_fields(await self.redis.hgetall(tk.dep_outbox))
                for raw_id, raw_state in outbox.items():
                    await self._tell(tk, raw_id.decode(), raw_state.decode())
                    done += 1
        return done

    async def _tell(self, tk: TypeKeys, job_id: str, state: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(tk.dependents(job_id))
            pipe.hget(tk.job(job_id), "result")
            children, result = await pipe.execute()
        parent = ref_of(tk, job_id)
        for raw in replies.member_set(children):
            ctk, cid = keys_of_ref(self.prefix, raw.decode())
            await self.scripts.parent_done(ctk, cid, parent, state,
                                           (result or b"").decode() if state == "completed"
                                           else "", self.result_ttl_ms)
        async with self.redis.pipeline(transaction=False) as pipe:
            # The set stays for the retention (a workflow's graph, GET /jobs); the mark goes.
            pipe.pexpire(tk.dependents(job_id), max(1, self.result_ttl_ms))
            pipe.hdel(tk.job(job_id), "dependents")
            pipe.hdel(tk.dep_outbox, job_id)
            await pipe.execute()

    async def sweep(self) -> int:
        """Register again the blocked jobs whose registration is older than RECHECK_MS;
        returns how many."""
        now = server_ms(await self.redis.time())
        again = 0
        for tk in self.keys:
            ids = [i.decode() for i in replies.members(await self.redis.zrangebyscore(
                tk.blocked, "-inf", now - RECHECK_MS, start=0, num=100))]
            for job_id in ids:
                rec = replies.hash_fields(await self.redis.hgetall(tk.job(job_id)))
                raw = rec.get(STASH_B + Wire.DEPENDS_ON.b)
                if raw is None:
                    await self.redis.zrem(tk.blocked, job_id)  # no longer a blocked job
                    continue
                heard = {k[len(DEP_STATE):].decode() for k in rec
                         if k.startswith(DEP_STATE.encode())}
                parents = [keys_of_ref(self.prefix, r) for r in orjson.loads(raw)
                           if r not in heard]
                await self.redis.zadd(tk.blocked, {job_id: now}, xx=True)
                await register(self.scripts, tk, job_id, parents, self.result_ttl_ms)
                again += 1
        return again
