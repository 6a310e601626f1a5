"""The Lua transitions, loaded once and called through one typed async wrapper each.

Each script's header lists its KEYS and ARGV; :data:`SPECS` holds the same names and
the wrappers build their KEYS from them (``TypeKeys`` attributes), so a test can hold
every header against the code that calls it. ``--@include name`` lines are replaced by
``lua/includes/name.lua``. Scripts go through redis-py ``register_script``: EVALSHA
with a fallback to the source after NOSCRIPT (server restart, failover, SCRIPT FLUSH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from streamjobs.codes import Code
from streamjobs.connection import is_cluster
from streamjobs.contract import Failure, fields_of
from streamjobs.errors import ReplyShapeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

    from streamjobs.keys import TypeKeys

_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)


def lua_dir() -> Path:
    """``lua/`` beside the package in a source checkout, else ``engine/lua`` installed as
    package data by the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "lua", here / "lua"):
        if (candidate / "enqueue.lua").is_file():
            return candidate
    raise FileNotFoundError(f"the Lua scripts are missing (looked in {here.parent / 'lua'}, "
                            f"{here / 'lua'}): reinstall streamjobs")


@cache
def source(name: str) -> str:
    """A script's text with its includes inlined, each once, an include's own includes
    before it."""
    return _inline(lua_dir(), (lua_dir() / f"{name}.lua").read_text(), set())


def _inline(base: Path, text: str, seen: set[str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _inline(base, (base / "includes" / f"{name}.lua").read_text(), seen)

    return _INCLUDE.sub(one, text)


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply's shape: ``head`` values, then ``each`` repeated (a header's ``returns:``)."""

    head: tuple[str, ...] = ()
    each: tuple[str, ...] = ()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_CODES = {c.value: c for c in Code}
#: Codes come back as integers: a dict lookup (``Code(value)`` costs ~1 us, hot path).
_code = _CODES.__getitem__


#: How each name of a ``returns:`` line is read.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "code": _code, "job_id": _s, "state": _s, "previous_state": _s, "entry_id": _s,
    "fields": fields_of, "attempts": int, "due_at_ms": int, "moved": int,
    "next_due_in_ms": int, "orphans": int, "dead_count": int, "deliveries": int,
    "pruned": int, "expired_count": int, "result": _s,
}

#: A tail ending so carries a job's flat field list: its pair count, then the pairs
#: (``it.fields``) after the other names.
FLAT_FIELDS = ("nfields", "field", "value")


@dataclass(frozen=True, slots=True)
class Spec:
    """KEYS (``TypeKeys`` attribute names), ARGV names and reply shape of one script.

    ``tail`` names the repeated group of ARGV that follows the fixed ones; each item of
    that group is read by attribute name (or is the value itself for a one-name tail).
    """

    keys: tuple[str, ...]
    argv: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    reply: Reply = Reply(("code",))
    codes: tuple[Code, ...] = (Code.OK,)
    row: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = self.tail[:-3] if self.tail[-3:] == FLAT_FIELDS else self.tail
        object.__setattr__(self, "row", attrgetter(*named) if len(named) > 1 else None)


_EACH_CODE = Reply(each=("code",))

SPECS: dict[str, Spec] = {
    "enqueue": Spec(
        keys=("stream", "delayed", "stats", "job_prefix", "events", "blocked"),
        tail=("job_id", "token", "delay_ms", "run_at_ms", *FLAT_FIELDS),
        reply=Reply(each=("code", "job_id", "state")),
        codes=(Code.OK, Code.DUPLICATE, Code.DEDUPLICATED),
    ),
    "ack": Spec(
        keys=("stream", "stats", "done", "job_prefix", "events"),
        argv=("group", "consumer", "result_ttl_ms"),
        tail=("entry_id", "job_id", "result", "attempt", "max_attempts", "duration_ms",
              "started"),
        reply=_EACH_CODE, codes=(Code.OK, Code.NOT_OWNER, Code.WRONG_STATE, Code.ALREADY),
    ),
    "fail": Spec(
        keys=("stream", "delayed", "dead", "stats", "job_prefix", "events"),
        argv=("group", "consumer", "max_attempts", "immediate_retries", "backoff_base_ms",
              "backoff_cap_ms", "jitter"),
        tail=("entry_id", "job_id", "error", "traceback", "mode", "retry_after_ms", "rand",
              "duration_ms", "started"),
        reply=Reply(each=("code", "state", "attempts", "due_at_ms")),
        codes=(Code.OK, Code.NOT_OWNER, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "promote": Spec(
        keys=("stream", "delayed", "stats", "expired", "job_prefix", "events"),
        argv=("limit", "result_ttl_ms"),
        reply=Reply(("code", "moved", "next_due_in_ms", "orphans", "expired_count")),
    ),
    "reclaim": Spec(
        keys=("stream", "dead", "stats", "job_prefix", "events"),
        argv=("group", "consumer", "min_idle_ms", "count", "max_deliveries"),
        reply=Reply(("code", "dead_count"), ("entry_id", "fields", "deliveries")),
    ),
    "touch": Spec(
        keys=("stream",), argv=("group", "consumer"), tail=("entry_id",),
        reply=Reply(("code",), ("entry_id",)),
    ),
    "release": Spec(
        keys=("stream", "dead", "stats", "job_prefix"), argv=("group", "consumer"),
        tail=("entry_id", "job_id"), reply=_EACH_CODE,
        codes=(Code.OK, Code.NOT_OWNER, Code.NOT_FOUND),
    ),
    "dead_retry": Spec(
        keys=("stream", "dead", "stats", "job_prefix", "events"), tail=("job_id",),
        reply=_EACH_CODE,
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "dead_purge": Spec(
        keys=("dead", "stats", "job_prefix"), tail=("job_id",), reply=_EACH_CODE,
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "prune_consumers": Spec(
        keys=("stream",), argv=("group", "min_idle_ms"), reply=Reply(("code", "pruned")),
    ),
    "started": Spec(keys=("events",), argv=("consumer",),
                    tail=("job_id", "attempt", "ago_ms")),
    "progress": Spec(keys=("job_prefix", "events"),
                     argv=("job_id", "attempt", "progress", "message", "max_lines"),
                     tail=("line",)),
    "cancel": Spec(
        keys=("stream", "delayed", "stats", "cancels", "job_prefix", "events", "blocked"),
        argv=("group", "job_id", "result_ttl_ms", "entry_id"),
        reply=Reply(("code", "previous_state")),
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE, Code.REQUESTED),
    ),
    "stop": Spec(
        keys=("stream", "stats", "expired", "cancels", "job_prefix", "events"),
        argv=("group", "consumer", "result_ttl_ms", "max_running", "max_running_per_key",
              "lease_ms", "rate", "rate_period_ms", "key_rate", "key_rate_period_ms"),
        tail=("entry_id", "job_id", "action"),
        reply=Reply(each=("code", "state")),
        codes=(Code.OK, Code.NOT_OWNER, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "schedule_tick": Spec(
        keys=("stream", "delayed", "stats", "job_prefix", "schedule_due", "schedule_runs",
              "events"),
        argv=("schedule", "expected_ms", "tick_ms", "next_ms"), tail=("field",),
        reply=Reply(("code", "job_id")),
        codes=(Code.OK, Code.ALREADY, Code.WRONG_STATE, Code.DUPLICATE),
    ),
    "depend": Spec(
        keys=("job_prefix",), argv=("job_id", "child_ref"),
        reply=Reply(("code", "state", "result")),
        codes=(Code.OK, Code.NOT_FOUND, Code.ALREADY),
    ),
    "parent_done": Spec(
        keys=("stream", "stats", "dead", "blocked", "job_prefix", "events"),
        argv=("job_id", "parent_ref", "parent_state", "parent_result", "result_ttl_ms"),
        reply=Reply(("code", "state")),
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE, Code.ALREADY),
    ),
}


@lru_cache(maxsize=4096)
def script_keys(name: str, tk: TypeKeys) -> tuple[str, ...]:
    """KEYS of a script for a type, in its header's order (cached: hot path)."""
    return tuple(getattr(tk, k) for k in SPECS[name].keys)


def build_argv(name: str, items: Iterable[Any] = (), **named: Any) -> list[Any]:
    """ARGV of a script in its header's order: the fixed names from ``named``, then one
    group per item of ``items`` (read by the tail's names)."""
    spec = SPECS[name]
    if named.keys() != set(spec.argv):
        raise TypeError(f"{name} takes ARGV {spec.argv}, got {tuple(named)}")
    argv = [named[n] for n in spec.argv]
    row = spec.row
    if row is None:
        argv += items
    elif spec.tail[-3:] == FLAT_FIELDS:
        for it in items:
            argv += row(it)
            argv.append(len(it.fields) // 2)
            argv += it.fields
    else:
        for it in items:
            argv += row(it)
    return argv


def parse_reply(name: str, raw: Sequence[Any]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """A reply read by its declared shape: the head by name, then the repeated rows."""
    shape = SPECS[name].reply
    n, width = len(shape.head), len(shape.each)
    rest = len(raw) - n
    if rest < 0 or (rest % width if width else rest):
        raise ReplyShapeError(f"{name} replied {len(raw)} values; its shape is {shape}")
    head = {k: CONVERT[k](v) for k, v in zip(shape.head, raw, strict=False)}
    columns = [map(CONVERT[k], raw[n + i :: width]) for i, k in enumerate(shape.each)]
    return head, list(zip(*columns, strict=True))


class EnqueueItem(NamedTuple):
    fields: Sequence[bytes | str]
    job_id: str = ""
    delay_ms: int = 0
    run_at_ms: int = 0
    #: This one enqueue's mark: a replay of the call is answered OK, not DUPLICATE.
    token: str = ""


class EnqueueResult(NamedTuple):
    code: Code
    job_id: str
    state: str


class StopAction(StrEnum):
    """What ``stop.lua`` does with an entry (its ``action``)."""

    #: Check before running: expired, or a plain XADD duplicate of an active dedup_key.
    START = "start"
    #: Its cancel was asked: end it cancelled.
    CANCEL = "cancel"
    #: Its cancel was asked and cannot be carried out: say so in the record.
    HOLD = "hold"


class Limits(NamedTuple):
    """A type's concurrency limits as stop.lua takes them (0: none)."""

    max_running: int = 0
    max_running_per_key: int = 0
    #: A slot's lease (renewed at each start), and a parked job's fallback due time.
    lease_ms: int = 60_000
    #: Starts per period (0: no rate limit), of the type and per limit_key.
    rate: int = 0
    rate_period_ms: int = 1000
    key_rate: int = 0
    key_rate_period_ms: int = 1000


NO_LIMITS = Limits()


class StopItem(NamedTuple):
    entry_id: str
    job_id: str
    action: StopAction


class StopResult(NamedTuple):
    code: Code
    #: expired or cancelled (ended), running (run it / still running), '' when refused.
    state: str


class FailResult(NamedTuple):
    code: Code
    #: Where the job went: waiting (retried now), delayed or dead; '' when refused.
    state: str = ""
    attempts: int = 0
    due_at_ms: int = 0


class Claimed(NamedTuple):
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    dead_count: int
    #: The entries now owned by the caller.
    claimed: list[Claimed]


class AckItem(NamedTuple):
    entry_id: str
    job_id: str
    #: The JSON result, b'' when none.
    result: bytes | str = b""
    #: This attempt's number (1-based) and the max_attempts it ran under: a completed
    #: record shows how many attempts the job took.
    attempt: int = 1
    max_attempts: int = 0
    #: How long the attempt ran (ms, the worker's clock); -1 when unknown.
    duration_ms: int = -1
    #: 1 when the attempt's ``started`` event is still to write (by this call, first).
    started: int = 0


class StartedItem(NamedTuple):
    job_id: str
    #: The attempt's number, 1-based.
    attempt: int
    #: How long ago the attempt began (ms).
    ago_ms: int = 0


class ReleaseItem(NamedTuple):
    entry_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class FailArgs:
    """What a worker knows about a failed attempt; the script decides the outcome."""

    error: str
    traceback: str = ""
    #: One of :data:`streamjobs.contract.FAIL_MODES`.
    mode: Failure = Failure.RETRY
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class FailItem:
    entry_id: str
    job_id: str
    failure: FailArgs
    #: Uniform in [0, 1): the jitter draw (Lua's PRNG is seeded alike on every call).
    rand: float = 0.0
    #: How long the attempt ran (ms, the worker's clock); -1 when it did not run.
    duration_ms: int = -1
    #: 1 when the attempt's ``started`` event is still to write (by this call, first).
    started: int = 0

    @property
    def error(self) -> str:
        return self.failure.error

    @property
    def traceback(self) -> str:
        return self.failure.traceback

    @property
    def mode(self) -> Failure:
        return self.failure.mode

    @property
    def retry_after_ms(self) -> int:
        return self.failure.retry_after_ms


class Scripts:
    """Every transition, bound to one client. Create once per client and reuse."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        #: The client the scripts run on (for the rare plain read beside them).
        self.redis = redis
        self._registered: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in SPECS
        }

    async def _call(self, name: str, tk: TypeKeys, items: Iterable[Any] = (),
                    **named: Any) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        raw = await self._registered[name](
            keys=script_keys(name, tk), args=build_argv(name, items, **named)
        )
        return parse_reply(name, raw)

    async def enqueue(self, tk: TypeKeys, items: Sequence[EnqueueItem]) -> list[EnqueueResult]:
        _, rows = await self._call("enqueue", tk, items)
        return [EnqueueResult(*r) for r in rows]

    def enqueue_in(self, pipe: Pipeline, tk: TypeKeys, items: Sequence[EnqueueItem]) -> None:
        """Queue an enqueue call on a pipeline; parse its reply with :func:`parse_enqueue`."""
        keys = script_keys("enqueue", tk)
        script = self._registered["enqueue"]
        pipe.evalsha(script.sha, len(keys), *keys, *build_argv("enqueue", items))
        pipe.scripts.add(script)  # type: ignore[arg-type]  # NOSCRIPT: loaded before execute

    async def ack(
        self, tk: TypeKeys, group: str, consumer: str, result_ttl_ms: int,
        done: Sequence[AckItem],
    ) -> list[Code]:
        _, rows = await self._call("ack", tk, done, group=group, consumer=consumer,
                                   result_ttl_ms=result_ttl_ms)
        return [r[0] for r in rows]

    async def fail(
        self, tk: TypeKeys, group: str, consumer: str, failed: Sequence[FailItem], *,
        max_attempts: int, immediate_retries: int, backoff_base_ms: int,
        backoff_cap_ms: int, jitter: float,
    ) -> list[FailResult]:
        """A batch of failed attempts of one type; one result per item, in order."""
        _, rows = await self._call(
            "fail", tk, failed, group=group, consumer=consumer, max_attempts=max_attempts,
            immediate_retries=immediate_retries, backoff_base_ms=backoff_base_ms,
            backoff_cap_ms=backoff_cap_ms, jitter=jitter,
        )
        return [FailResult(*r) for r in rows]

    async def promote(self, tk: TypeKeys, limit: int = 1000,
                      result_ttl_ms: int = 86_400_000) -> tuple[int, int, int]:
        """Returns (moved, next due in ms or -1, orphans). Due jobs past their
        ``expires_at`` end expired (records kept ``result_ttl_ms``)."""
        head, _ = await self._call("promote", tk, limit=limit, result_ttl_ms=result_ttl_ms)
        return head["moved"], head["next_due_in_ms"], head["orphans"]

    async def stop(self, tk: TypeKeys, group: str, consumer: str, result_ttl_ms: int,
                   items: Sequence[StopItem], limits: Limits | None = None,
                   ) -> list[StopResult]:
        """``limits``: the type's concurrency and rate limits, taken at START (none: not
        checked)."""
        lim = limits or NO_LIMITS
        _, rows = await self._call("stop", tk, items, group=group, consumer=consumer,
                                   result_ttl_ms=result_ttl_ms, max_running=lim.max_running,
                                   max_running_per_key=lim.max_running_per_key,
                                   lease_ms=lim.lease_ms, rate=lim.rate,
                                   rate_period_ms=lim.rate_period_ms, key_rate=lim.key_rate,
                                   key_rate_period_ms=lim.key_rate_period_ms)
        return [StopResult(*r) for r in rows]

    async def reclaim(
        self, tk: TypeKeys, group: str, consumer: str, min_idle_ms: int, count: int,
        max_deliveries: int,
    ) -> ReclaimResult:
        head, rows = await self._call(
            "reclaim", tk, group=group, consumer=consumer, min_idle_ms=min_idle_ms,
            count=count, max_deliveries=max_deliveries,
        )
        return ReclaimResult(head["dead_count"], [Claimed(*r) for r in rows])

    async def touch(
        self, tk: TypeKeys, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> list[str]:
        """Returns the entries the caller no longer owns."""
        _, rows = await self._call("touch", tk, entry_ids, group=group, consumer=consumer)
        return [r[0] for r in rows]

    async def release(
        self, tk: TypeKeys, group: str, consumer: str, entries: Sequence[ReleaseItem]
    ) -> list[Code]:
        _, rows = await self._call("release", tk, entries, group=group, consumer=consumer)
        return [r[0] for r in rows]

    async def dead_retry(self, tk: TypeKeys, job_ids: Sequence[str]) -> list[Code]:
        _, rows = await self._call("dead_retry", tk, job_ids)
        return [r[0] for r in rows]

    async def dead_purge(self, tk: TypeKeys, job_ids: Sequence[str]) -> list[Code]:
        _, rows = await self._call("dead_purge", tk, job_ids)
        return [r[0] for r in rows]

    async def prune_consumers(self, tk: TypeKeys, group: str, min_idle_ms: int) -> int:
        """Delete consumers holding no entries and idle at least ``min_idle_ms``."""
        head, _ = await self._call("prune_consumers", tk, group=group, min_idle_ms=min_idle_ms)
        return int(head["pruned"])

    async def started(self, tk: TypeKeys, consumer: str, jobs: Sequence[StartedItem]) -> None:
        """Write the ``started`` events of attempts that began since the last settle."""
        await self._call("started", tk, jobs, consumer=consumer)

    async def progress(self, tk: TypeKeys, job_id: str, attempt: int, progress: str,
                       message: str, max_lines: int, lines: Sequence[str]) -> None:
        """Record a running attempt's progress ('' for none) and log lines."""
        await self._call("progress", tk, lines, job_id=job_id, attempt=attempt,
                         progress=progress, message=message, max_lines=max_lines)

    async def cancel(
        self, tk: TypeKeys, group: str, job_id: str, result_ttl_ms: int, entry_id: str = ""
    ) -> tuple[Code, str]:
        """``entry_id``: a job's entry found without a record (a plain XADD)."""
        head, _ = await self._call("cancel", tk, group=group, job_id=job_id,
                                   result_ttl_ms=result_ttl_ms, entry_id=entry_id)
        return head["code"], head["previous_state"]

    async def depend(self, parents: Sequence[tuple[TypeKeys, str]], child_ref: str
                     ) -> list[tuple[Code, str, str]]:
        """Register ``child_ref`` as waiting for each parent (keys, id), one pipeline:
        per parent (code, its state, its result when it completed already)."""
        if is_cluster(self.redis):  # no script calls in a cluster pipeline: one by one
            heads = [(await self._call("depend", tk, job_id=job_id, child_ref=child_ref))[0]
                     for tk, job_id in parents]
            return [(h["code"], h["state"], h["result"]) for h in heads]
        script = self._registered["depend"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for tk, job_id in parents:
                keys = script_keys("depend", tk)
                pipe.evalsha(script.sha, len(keys), *keys,
                             *build_argv("depend", job_id=job_id, child_ref=child_ref))
            pipe.scripts.add(script)  # type: ignore[arg-type]  # NOSCRIPT: loaded first
            raws = await pipe.execute()
        out = []
        for raw in raws:
            head, _ = parse_reply("depend", raw)
            out.append((head["code"], head["state"], head["result"]))
        return out

    async def parent_done(self, tk: TypeKeys, job_id: str, parent_ref: str, parent_state: str,
                          parent_result: str, result_ttl_ms: int) -> tuple[Code, str]:
        """Tell the blocked job ``job_id`` that a parent ended: (code, its state now)."""
        head, _ = await self._call("parent_done", tk, job_id=job_id, parent_ref=parent_ref,
                                   parent_state=parent_state, parent_result=parent_result,
                                   result_ttl_ms=result_ttl_ms)
        return head["code"], head["state"]

    async def schedule_tick(
        self, tk: TypeKeys, name: str, expected_ms: int, tick_ms: int, next_ms: int,
        fields: Sequence[bytes | str],
    ) -> tuple[Code, str]:
        """Enqueue a schedule's tick if its next run is still ``expected_ms``; returns
        the code and the tick's job id."""
        head, _ = await self._call("schedule_tick", tk, fields, schedule=name,
                                   expected_ms=expected_ms, tick_ms=tick_ms, next_ms=next_ms)
        return head["code"], head["job_id"]


def parse_enqueue(raw: Sequence[Any]) -> list[EnqueueResult]:
    return [EnqueueResult(*r) for r in parse_reply("enqueue", raw)[1]]
