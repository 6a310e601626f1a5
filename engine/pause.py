"""Pausing a type: a key under the type's hash tag (``TypeKeys.paused``), so the state
lives on the server and survives worker restarts. Workers read it about every
:data:`REFRESH_S` seconds and start no job of a paused type; enqueues still land and
running jobs finish."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamjobs.counts import server_ms

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys

#: How often a worker reads the paused state of its types.
REFRESH_S = 0.25


async def pause_type(redis: Redis, tk: TypeKeys) -> bool:
    """Pause a type; False when it already was."""
    now = server_ms(await redis.time())
    return bool(await redis.set(tk.paused, now, nx=True))


async def resume_type(redis: Redis, tk: TypeKeys) -> bool:
    """Resume a type; False when it was not paused."""
    return bool(await redis.delete(tk.paused))


async def paused_types(redis: Redis, tks: Sequence[TypeKeys]) -> set[str]:
    """The names (``TypeKeys.name``) of these keys whose type is paused (one pipeline): a
    partitioned type's pause, under its own tag, pauses all its partitions and levels."""
    if not tks:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for tk in tks:
            pipe.exists(tk.paused)
        found = await pipe.execute()
    return {tk.name for tk, n in zip(tks, found, strict=True) if n}
