"""The Lua transitions, loaded once and called through one typed async wrapper each.

Each script's header lists its KEYS and ARGV; :data:`SPECS` holds the same names and
the wrappers build their KEYS from them (``TypeKeys`` attributes), so a test can hold
every header against the code that calls it. ``--@include name`` lines are replaced by
``lua/includes/name.lua``. Scripts go through redis-py ``register_script``: EVALSHA
with a fallback to the source after NOSCRIPT (server restart, failover, SCRIPT FLUSH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamjobs.codes import Code

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    """A script's text with its includes inlined."""
    base = lua_dir()
    text = (base / f"{name}.lua").read_text()
    return _INCLUDE.sub(lambda m: (base / "includes" / f"{m.group(1)}.lua").read_text(), text)


@dataclass(frozen=True, slots=True)
class Spec:
    """KEYS (``TypeKeys`` attribute names) and ARGV names of one script, in order.

    ``tail`` names the repeated group of ARGV that follows the fixed ones.
    """

    keys: tuple[str, ...]
    argv: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    codes: tuple[Code, ...] = (Code.OK,)


SPECS: dict[str, Spec] = {
    "enqueue": Spec(
        keys=("stream", "delayed", "stats", "job_prefix"),
        tail=("job_id", "delay_ms", "run_at_ms", "nfields", "field", "value"),
        codes=(Code.OK, Code.DUPLICATE),
    ),
    "ack": Spec(
        keys=("stream", "stats", "done", "job_prefix"),
        argv=("group", "consumer", "result_ttl_ms"),
        tail=("entry_id", "job_id", "result"),
        codes=(Code.OK, Code.NOT_OWNER, Code.WRONG_STATE),
    ),
    "fail": Spec(
        keys=("stream", "delayed", "dead", "stats", "job_prefix"),
        argv=("group", "consumer", "max_attempts", "immediate_retries", "backoff_base_ms",
              "backoff_cap_ms", "jitter"),
        tail=("entry_id", "job_id", "error", "traceback", "mode", "retry_after_ms", "rand"),
        codes=(Code.OK, Code.NOT_OWNER, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "promote": Spec(keys=("stream", "delayed", "job_prefix"), argv=("limit",)),
    "reclaim": Spec(
        keys=("stream", "dead", "stats", "job_prefix"),
        argv=("group", "consumer", "min_idle_ms", "count", "max_deliveries"),
    ),
    "touch": Spec(keys=("stream",), argv=("group", "consumer"), tail=("entry_id",)),
    "release": Spec(
        keys=("stream", "stats", "job_prefix"), argv=("group", "consumer"),
        tail=("entry_id", "job_id"), codes=(Code.OK, Code.NOT_OWNER, Code.NOT_FOUND),
    ),
    "dead_retry": Spec(
        keys=("stream", "dead", "stats", "job_prefix"), tail=("job_id",),
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "dead_purge": Spec(
        keys=("dead", "stats", "job_prefix"), tail=("job_id",),
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
    "prune_consumers": Spec(keys=("stream",), argv=("group", "min_idle_ms")),
    "cancel": Spec(
        keys=("stream", "delayed", "stats", "job_prefix"),
        argv=("group", "job_id", "result_ttl_ms"),
        codes=(Code.OK, Code.NOT_FOUND, Code.WRONG_STATE),
    ),
}


@lru_cache(maxsize=4096)
def script_keys(name: str, tk: TypeKeys) -> tuple[str, ...]:
    """KEYS of a script for a type, in its header's order (cached: hot path)."""
    return tuple(getattr(tk, k) for k in SPECS[name].keys)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class EnqueueItem:
    fields: Sequence[bytes | str]
    job_id: str = ""
    delay_ms: int = 0
    run_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    code: Code
    job_id: str
    state: str


@dataclass(frozen=True, slots=True)
class FailResult:
    code: Code
    outcome: str = ""
    attempts: int = 0
    due_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class ReclaimResult:
    dead: int
    #: (entry id, raw fields, deliveries) of each entry now owned by the caller.
    claimed: list[tuple[str, dict[bytes, bytes], int]]


@dataclass(frozen=True, slots=True)
class FailArgs:
    """What a worker knows about a failed attempt; the script decides the outcome."""

    error: str
    traceback: str = ""
    #: 'retry' (policy decides), 'after' (retry_after_ms), 'dead' (no more attempts).
    mode: str = "retry"
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class FailItem:
    entry_id: str
    job_id: str
    failure: FailArgs
    #: Uniform in [0, 1): the jitter draw (Lua's PRNG is seeded alike on every call).
    rand: float = 0.0


class Scripts:
    """Every transition, bound to one client. Create once per client and reuse."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._registered: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in SPECS
        }

    async def _call(
        self, name: str, tk: TypeKeys, argv: Sequence[Any], client: Redis | Pipeline | None = None
    ) -> Any:
        return await self._registered[name](
            keys=script_keys(name, tk), args=list(argv), client=client
        )

    def enqueue_args(self, items: Sequence[EnqueueItem]) -> list[Any]:
        argv: list[Any] = []
        for it in items:
            argv += [it.job_id, it.delay_ms, it.run_at_ms, len(it.fields) // 2, *it.fields]
        return argv

    async def enqueue(self, tk: TypeKeys, items: Sequence[EnqueueItem]) -> list[EnqueueResult]:
        raw = await self._call("enqueue", tk, self.enqueue_args(items))
        return parse_enqueue(raw)

    def enqueue_in(self, pipe: Pipeline, tk: TypeKeys, items: Sequence[EnqueueItem]) -> None:
        """Queue an enqueue call on a pipeline; parse its reply with :func:`parse_enqueue`."""
        self.enqueue_raw_in(pipe, tk, self.enqueue_args(items))

    def enqueue_raw_in(self, pipe: Pipeline, tk: TypeKeys, argv: Sequence[Any]) -> None:
        """Like :meth:`enqueue_in` with ARGV already laid out as the script's header says."""
        keys = script_keys("enqueue", tk)
        script = self._registered["enqueue"]
        pipe.evalsha(script.sha, len(keys), *keys, *argv)
        pipe.scripts.add(script)  # type: ignore[arg-type]  # NOSCRIPT: loaded before execute

    async def ack(
        self, tk: TypeKeys, group: str, consumer: str, result_ttl_ms: int,
        done: Sequence[tuple[str, str, bytes | str]],
    ) -> list[Code]:
        argv: list[Any] = [group, consumer, result_ttl_ms]
        for entry_id, job_id, result in done:
            argv += [entry_id, job_id, result]
        return [Code(c) for c in await self._call("ack", tk, argv)]

    async def fail(
        self, tk: TypeKeys, group: str, consumer: str, failed: Sequence[FailItem], *,
        max_attempts: int, immediate_retries: int, backoff_base_ms: int,
        backoff_cap_ms: int, jitter: float,
    ) -> list[FailResult]:
        """A batch of failed attempts of one type; one result per item, in order."""
        argv: list[Any] = [group, consumer, max_attempts, immediate_retries, backoff_base_ms,
                           backoff_cap_ms, repr(jitter)]
        for it in failed:
            f = it.failure
            argv += [it.entry_id, it.job_id, f.error, f.traceback, f.mode, f.retry_after_ms,
                     repr(it.rand)]
        raw = await self._call("fail", tk, argv)
        return [
            FailResult(Code(int(raw[i])), _s(raw[i + 1]), int(raw[i + 2]), int(raw[i + 3]))
            for i in range(0, len(raw), 4)
        ]

    async def promote(self, tk: TypeKeys, limit: int = 1000) -> tuple[int, int, int]:
        """Returns (moved, next due in ms or -1, orphans)."""
        raw = await self._call("promote", tk, [limit])
        return int(raw[1]), int(raw[2]), int(raw[3])

    async def reclaim(
        self, tk: TypeKeys, group: str, consumer: str, min_idle_ms: int, count: int,
        max_deliveries: int,
    ) -> ReclaimResult:
        raw = await self._call(
            "reclaim", tk, [group, consumer, min_idle_ms, count, max_deliveries]
        )
        claimed = []
        for i in range(2, len(raw), 3):
            flat = raw[i + 1]
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            claimed.append((_s(raw[i]), fields, int(raw[i + 2])))
        return ReclaimResult(int(raw[1]), claimed)

    async def touch(
        self, tk: TypeKeys, group: str, consumer: str, entry_ids: Sequence[str]
    ) -> list[str]:
        """Returns the entries the caller no longer owns."""
        raw = await self._call("touch", tk, [group, consumer, *entry_ids])
        return [_s(x) for x in raw[1:]]

    async def release(
        self, tk: TypeKeys, group: str, consumer: str, entries: Sequence[tuple[str, str]]
    ) -> list[Code]:
        argv: list[Any] = [group, consumer]
        for entry_id, job_id in entries:
            argv += [entry_id, job_id]
        return [Code(c) for c in await self._call("release", tk, argv)]

    async def dead_retry(self, tk: TypeKeys, job_ids: Sequence[str]) -> list[Code]:
        return [Code(c) for c in await self._call("dead_retry", tk, list(job_ids))]

    async def dead_purge(self, tk: TypeKeys, job_ids: Sequence[str]) -> list[Code]:
        return [Code(c) for c in await self._call("dead_purge", tk, list(job_ids))]

    async def prune_consumers(self, tk: TypeKeys, group: str, min_idle_ms: int) -> int:
        """Delete consumers holding no entries and idle at least ``min_idle_ms``."""
        raw = await self._call("prune_consumers", tk, [group, min_idle_ms])
        return int(raw[1])

    async def cancel(
        self, tk: TypeKeys, group: str, job_id: str, result_ttl_ms: int
    ) -> tuple[Code, str]:
        raw = await self._call("cancel", tk, [group, job_id, result_ttl_ms])
        return Code(int(raw[0])), _s(raw[1])


def parse_enqueue(raw: Sequence[Any]) -> list[EnqueueResult]:
    return [
        EnqueueResult(Code(int(raw[i])), _s(raw[i + 1]), _s(raw[i + 2]))
        for i in range(0, len(raw), 3)
    ]
