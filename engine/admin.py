"""Operator actions on whole types."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from streamjobs.keys import TypeKeys, types_key
from streamjobs.streams import partition_keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Keys per SCAN step and per UNLINK.
BATCH = 500

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


async def delete_type(redis: Redis, type_name: str, *, prefix: str = "sj") -> int:
    """Delete every key of a type (stream, group, records, dead letters, stats) and forget
    the type; return how many keys went. Stop its workers first: a running worker
    creates its stream and group again."""
    deleted = 0
    for tk in await partition_keys(redis, TypeKeys(prefix, type_name)):
        deleted += await _delete_keys(redis, tk)
    await redis.srem(types_key(prefix), type_name)
    return deleted


async def _delete_keys(redis: Redis, tk: TypeKeys) -> int:
    # Every key of a partition starts with its hash-tagged base (keys.py): one pattern.
    pattern = _GLOB_SPECIAL.sub(r"\\\1", tk.base) + "*"
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=BATCH):
        batch.append(key)
        if len(batch) >= BATCH:
            deleted += int(await redis.unlink(*batch))
            batch = []
    if batch:
        deleted += int(await redis.unlink(*batch))
    return deleted
