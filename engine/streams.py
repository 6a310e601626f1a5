"""A type's stream and consumer group, created on first use and registered as a known type.

Producers and workers both call :func:`ensure_types` before they touch a type: the
group is created at id 0 with MKSTREAM, so entries written by a plain XADD before any
worker existed are still delivered. The set of known types is an index for listings
on a slot of its own: writing it is best effort, so a type's path never waits on (or
fails with) another node of a cluster. :func:`rescan_types` rebuilds it from the
streams themselves.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import anyio
from anyio import TASK_STATUS_IGNORED
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from streamjobs.contract import EVENTS_OFF, TYPE_NAME
from streamjobs.counts import server_ms
from streamjobs.errors import ConfigError
from streamjobs.history import sample
from streamjobs.keys import (
    GROUP,
    MAX_PARTITIONS,
    PARTITIONS_FIELD,
    TypeKeys,
    parse_partitions,
    split_tag,
    types_key,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import TaskStatus
    from redis.asyncio import Redis


log = logging.getLogger("streamjobs")


async def ensure_group(redis: Redis, tk: TypeKeys) -> bool:
    """Create the consumer group at id 0 (MKSTREAM): earlier entries are delivered too.
    A full server refuses XGROUP CREATE even when the group exists: then it is looked up.
    True if this call created it."""
    try:
        await redis.xgroup_create(tk.stream, GROUP, id="0", mkstream=True)
    except OutOfMemoryError:
        if not await group_exists(redis, tk):
            raise
        return False
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
        return False
    return True


async def group_exists(redis: Redis, tk: TypeKeys) -> bool:
    """Does the type's consumer group exist? (A read: answered by a full server too.)"""
    try:
        groups = await redis.xinfo_groups(tk.stream)
    except ResponseError:  # no such key
        return False
    return any(g["name"] in (GROUP, GROUP.encode()) for g in groups)


async def ensure_types(redis: Redis, tks: Sequence[TypeKeys]) -> None:
    """Each type's group exists, and the type is in the set of known types (best effort:
    a failure there is logged, never raised). A new type's counters are snapshotted
    for the throughput chart (streamjobs.history): its first minute counts from here."""
    created = [tk for tk in tks if await ensure_group(redis, tk)]
    if created:
        try:
            await sample(redis, created, server_ms(await redis.time()))
        except (RedisError, OSError) as e:
            log.warning("could not snapshot the counters of new types %s (the throughput "
                        "chart starts a minute later): %s",
                        ",".join(tk.type for tk in created), e)
    if tks:
        try:
            await redis.sadd(types_key(tks[0].prefix), *(tk.type for tk in tks))
        except (RedisError, OSError) as e:
            log.warning("could not list types %s as known (they work; `streamjobs stats` "
                        "may miss them until the next start): %s",
                        ",".join(tk.type for tk in tks), e)


async def rescan_types(redis: Redis, prefix: str) -> list[str]:
    """Find every type by its stream (a SCAN of each primary, O(keys)), add them to the
    set of known types, and return them sorted."""
    found: set[str] = set()
    # A cluster client's scan_iter walks every primary.
    match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":{*}:stream"
    async for key in redis.scan_iter(match=match, count=1000, _type="stream"):
        name = key.decode("utf-8", "replace")
        t, k = split_tag(name[len(prefix) + 2 : -len("}:stream")])
        if TYPE_NAME.fullmatch(t) and TypeKeys(prefix, t, k).stream == name:
            found.add(t)  # a partition's stream names its type
    if found:
        await redis.sadd(types_key(prefix), *found)
    return sorted(found)


#: The first scan of an API's start waits at most this long (the rest runs on).
FIRST_SCAN_S = 5.0


async def keep_types_indexed(redis: Redis, prefix: str, every_s: float,
                             task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """Find the types written only by plain XADD (no producer or worker of ours ever
    registered them): one scan at once (``task_status`` reports after it, or after
    FIRST_SCAN_S), then one every ``every_s`` seconds (0: none). A failed scan is logged
    and tried again next time."""
    started = False
    while True:
        with anyio.move_on_after(None if started else FIRST_SCAN_S):
            try:
                await rescan_types(redis, prefix)
            except (RedisError, OSError) as e:
                log.warning("scanning for job types failed (retried in %gs): %s", every_s, e)
        if not started:
            started = True
            task_status.started()
        if every_s <= 0:
            return
        await anyio.sleep(every_s)


async def partitions_of(redis: Redis, tk: TypeKeys) -> int:
    """How many partitions the type's jobs are spread over (its config hash, in the
    type's own slot; 1 when none was published)."""
    return parse_partitions(await redis.hget(tk.config, PARTITIONS_FIELD))


async def publish_partitions(redis: Redis, tk: TypeKeys, n: int) -> int:
    """Record the type's partition count where producers, views and other workers read
    it (1: the field is removed); return the count it had. Lowering it strands jobs left
    in the dropped partitions: drain them first."""
    if not 1 <= n <= MAX_PARTITIONS:
        raise ConfigError(f"partitions must be from 1 to {MAX_PARTITIONS}, not {n}")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(tk.config, PARTITIONS_FIELD)
        if n > 1:
            pipe.hset(tk.config, PARTITIONS_FIELD, n)
        else:
            pipe.hdel(tk.config, PARTITIONS_FIELD)
        before, _ = await pipe.execute()
    old = parse_partitions(before)
    if n > old:  # new partitions take partition 0's events switch (engine/events.py)
        parts = tk.partitions(n)
        if await redis.type(parts[0].events) == b"string":
            for part in parts[old:]:
                await redis.set(part.events, EVENTS_OFF)
    return old


async def partition_keys(redis: Redis, tk: TypeKeys) -> list[TypeKeys]:
    """The keys of every partition of a type (one read of its config)."""
    return tk.partitions(await partitions_of(redis, tk))
