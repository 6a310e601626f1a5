"""A type's stream and consumer group, created on first use and registered as a known type.

Producers and workers both call :func:`ensure_types` before they touch a type: the
group is created at id 0 with MKSTREAM, so entries written by a plain XADD before any
worker existed are still delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from streamjobs.keys import GROUP, types_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys


async def ensure_group(redis: Redis, tk: TypeKeys) -> None:
    """Create the consumer group at id 0 (MKSTREAM): earlier entries are delivered too."""
    try:
        await redis.xgroup_create(tk.stream, GROUP, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


async def ensure_types(redis: Redis, tks: Sequence[TypeKeys]) -> None:
    """Each type's group exists and the type is in the set of known types."""
    for tk in tks:
        await ensure_group(redis, tk)
    if tks:
        await redis.sadd(types_key(tks[0].prefix), *(tk.type for tk in tks))
