"""The events streams: one per type (``<prefix>:{type}:events``; a partitioned type has
one per partition, ``{type#k}``, beside the partition's other keys), written by the
scripts that make the transitions (``lua/includes/emit.lua``), read here.

``Events(url).watch(types=[...])`` follows them (XREAD BLOCK: one read of every stream on
one server, one read per stream on a cluster, where each is its own slot);
:func:`wait_final` blocks until one job's final event, which ``Producer.result`` uses.

The on/off switch is per stream (a string in its place, which every script sees with
one TYPE per call: a script of partition k can only read partition k's slot), kept equal
across a type's partitions: :func:`switch_events` sets every partition, a type's count
raised later copies partition 0's (``streams.publish_partitions``), and readers ask
partition 0 (:func:`events_on`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamjobs import replies
from streamjobs.config import Settings
from streamjobs.connection import (
    BLOCK_MARGIN_S,
    client_from_url,
    is_cluster,
    socket_timeout_of,
)
from streamjobs.contract import EVENTS_OFF, FINAL_EVENTS, EventField
from streamjobs.errors import ConfigError
from streamjobs.keys import TypeKeys
from streamjobs.streams import partition_keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

#: Every event has these; the rest of an event's fields are its ``data``.
_COMMON = frozenset(f.b for f in (EventField.EVENT, EventField.ID, EventField.ATTEMPT,
                                  EventField.AT))


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One transition of one job, as its events stream holds it."""

    type: str
    #: The events-stream entry id: a position to read after.
    stream_id: str
    event: str
    id: str
    attempt: int
    #: Server time of the transition, ms since the epoch.
    at: int
    #: The event's other fields (``error``, ``reason``, ``due_at``, ``consumer``, ...).
    data: dict[str, str]
    #: The type's partition whose stream holds it (0 for an unpartitioned type).
    partition: int = 0

    @property
    def tag(self) -> str:
        """The stream's hash tag: the type, or ``type#partition`` (``stream_id`` is a
        position in that stream only)."""
        return TypeKeys("x", self.type, self.partition).tag

    @classmethod
    def parse(cls, type_: str, stream_id: bytes | str, fields: Mapping[bytes, bytes],
              partition: int = 0) -> JobEvent:
        def get(f: EventField) -> str:
            return fields.get(f.b, b"").decode("utf-8", "replace")

        return cls(
            type=type_,
            stream_id=stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
            event=get(EventField.EVENT), id=get(EventField.ID),
            attempt=int(get(EventField.ATTEMPT) or 0), at=int(get(EventField.AT) or 0),
            data={k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                  for k, v in fields.items() if k not in _COMMON},
            partition=partition,
        )

    def to_dict(self) -> dict[str, Any]:
        """Its JSON form (``partition`` only for a partition other than 0)."""
        out = {"type": self.type, "stream_id": self.stream_id, "event": self.event,
               "id": self.id, "attempt": self.attempt, "at": self.at, **self.data}
        if self.partition:
            out["partition"] = self.partition
        return out


def block_slice_ms(redis: Redis) -> int:
    """The longest one blocking read may wait on this client: below its read timeout."""
    timeout = socket_timeout_of(redis)
    if timeout is None:
        return 60_000
    return max(10, int((timeout - BLOCK_MARGIN_S) * 1000))


async def events_on(redis: Redis, tk: TypeKeys) -> bool:
    """Whether the type's transitions are written to its events streams (the default):
    partition 0's switch, which :func:`switch_events` keeps the others' equal to."""
    return bool(await redis.type(tk.partitions(1)[0].events) != b"string")


async def switch_events(redis: Redis, tk: TypeKeys, on: bool) -> None:
    """Switch a type's events on or off, in every partition (off drops the streams).
    Producers and workers see it at once: the scripts read it. ``result()`` and
    ``watch()`` need events on."""
    for part in await partition_keys(redis, tk):
        await set_switch(redis, part, on)


async def set_switch(redis: Redis, part: TypeKeys, on: bool) -> None:
    """One partition's switch."""
    if on:
        if await redis.type(part.events) == b"string":
            await redis.delete(part.events)
    else:
        await redis.set(part.events, EVENTS_OFF)


async def check_events_on(redis: Redis, tk: TypeKeys) -> None:
    if not await events_on(redis, tk):
        raise ConfigError(f"events are switched off for type {tk.type!r}: results and "
                          f"watching need them (streamjobs events {tk.type} on)")


async def recent_events(redis: Redis, tks: Sequence[TypeKeys], n: int) -> list[JobEvent]:
    """The last ``n`` events of these types (their own streams: partition 0), newest
    first, in one pipeline; a type whose events are off has none."""
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            pipe.xrevrange(tk.events, count=n)
        found = await pipe.execute(raise_on_error=False)
    events = [JobEvent.parse(tk.type, entry_id, fields)
              for tk, rows in zip(tks, found, strict=True) if not isinstance(rows, Exception)
              for entry_id, fields in replies.entries(rows)]
    events.sort(key=lambda e: e.at, reverse=True)
    return events[:n]


async def last_id(redis: Redis, tk: TypeKeys) -> str:
    """The events stream's last entry id ("0-0" when empty): a position to read after."""
    rows = replies.entries(await redis.xrevrange(tk.events, count=1))
    return rows[0][0].decode() if rows else "0-0"


async def last_ids(redis: Redis, parts: Sequence[TypeKeys]) -> dict[TypeKeys, str]:
    """:func:`last_id` of each partition's stream, in one pipeline."""
    if len(parts) == 1:
        return {parts[0]: await last_id(redis, parts[0])}
    async with redis.pipeline(transaction=False) as pipe:
        for part in parts:
            pipe.xrevrange(part.events, count=1)
        raw = await pipe.execute()
    out = {}
    for part, reply in zip(parts, raw, strict=True):
        rows = replies.entries(reply)
        out[part] = rows[0][0].decode() if rows else "0-0"
    return out


async def wait_final(redis: Redis, tk: TypeKeys, job_id: str, after: str,
                     timeout_s: float) -> JobEvent | None:
    """Block until the job's final event (completed, dead, cancelled) after ``after``;
    None when ``timeout_s`` seconds pass first. One blocking read at a time, no polling."""
    deadline = time.monotonic() + timeout_s
    slice_ms = block_slice_ms(redis)
    position = after
    while True:
        left_ms = math.ceil((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return None
        reply = await redis.xread({tk.events: position}, count=1000,
                                  block=min(left_ms, slice_ms))
        for _, entries in replies.stream_reads(reply):
            for entry_id, fields in entries:
                position = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if (fields.get(EventField.ID.b) == job_id.encode()
                        and fields.get(EventField.EVENT.b, b"").decode() in FINAL_EVENTS):
                    return JobEvent.parse(tk.type, entry_id, fields, tk.partition)


class Events:
    """Follows the events streams of some types. ``redis`` is a client or a URL."""

    def __init__(self, redis: Redis | RedisCluster | str, *,
                 settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = (client_from_url(redis) if isinstance(redis, str)
                             else redis)  # type: ignore[assignment]

    async def watch(self, types: Sequence[str], *, since: str = "$",
                    block_ms: int = 1000) -> AsyncIterator[JobEvent]:
        """Every event of ``types`` after ``since`` (``$``: from now on; ``0``: all the
        streams hold), in each stream's order, forever: every partition of a partitioned
        type (the count as read when the watch starts). On a cluster each stream is read
        by its own task (one slot each); break out of the loop to stop."""
        keys: dict[str, TypeKeys] = {}
        for t in types:
            tk = TypeKeys(self.settings.prefix, t)
            await check_events_on(self.redis, tk)
            keys.update((part.events, part) for part in await partition_keys(self.redis, tk))
        block = min(block_ms, block_slice_ms(self.redis))
        if not is_cluster(self.redis) or len(keys) == 1:
            async for event in self._follow(keys, since, block):
                yield event
            return
        # Plain asyncio tasks, not a task group: a generator left unfinished is closed
        # later, from whatever task collects it, which a cancel scope refuses.
        queue: asyncio.Queue[JobEvent | BaseException] = asyncio.Queue(1000)
        tasks = [asyncio.create_task(self._pump({key: part}, since, block, queue))
                 for key, part in keys.items()]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()

    async def _pump(self, keys: dict[str, TypeKeys], since: str, block: int,
                    queue: asyncio.Queue[JobEvent | BaseException]) -> None:
        try:
            async for event in self._follow(keys, since, block):
                await queue.put(event)
        except Exception as e:  # the reader sees it
            await queue.put(e)

    async def _follow(self, keys: dict[str, TypeKeys], since: str,
                      block: int) -> AsyncIterator[JobEvent]:
        positions = dict.fromkeys(keys, since)
        if since == "$":  # "$" re-read each time would skip what came between two reads
            for key, part in keys.items():
                positions[key] = await last_id(self.redis, part)
        while True:
            reply = await self.redis.xread(positions, count=1000, block=block)  # type: ignore[arg-type]
            for stream, entries in replies.stream_reads(reply):
                key = stream.decode() if isinstance(stream, bytes) else stream
                part = keys[key]
                for entry_id, fields in entries:
                    event = JobEvent.parse(part.type, entry_id, fields, part.partition)
                    positions[key] = event.stream_id
                    yield event

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    async def __aenter__(self) -> Events:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["Events", "JobEvent", "events_on", "last_id", "last_ids", "set_switch",
           "switch_events", "wait_final"]
