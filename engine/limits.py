"""What a type's flow-control limits hold right now, for ``GET /types/{type}`` and
``streamjobs types show``: the concurrency slots taken and the jobs parked for one
(``max_running``), the starts in the rate limit's window and a ``RateLimited`` hold. The
type's own scope (``@``) only: a key's scopes are as many as its keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamjobs.records import Record

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys

#: The scope of limits on the whole type (a key's is ``k:<limit_key>``).
TYPE_SCOPE = "@"


@dataclass(frozen=True, slots=True)
class LimitUsage(Record):
    """The type's limits now (partition 0's on a partitioned type: limits hold per
    partition)."""

    #: Jobs holding a ``max_running`` slot.
    running: int
    #: Jobs parked until a slot frees (state ``delayed``, no attempt spent).
    held: int
    #: Starts counted in the rate limit's window (trimmed at each start: may include
    #: starts older than the period when none came since).
    rate_window_starts: int
    #: Ms left of a ``RateLimited`` hold of the whole type (None: not held).
    rate_hold_ms: int | None


async def limit_usage(redis: Redis, tk: TypeKeys) -> LimitUsage:
    """One pipeline of four reads."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(tk.slots(TYPE_SCOPE))
        pipe.llen(tk.held(TYPE_SCOPE))
        pipe.zcard(tk.rate(TYPE_SCOPE))
        pipe.pttl(tk.rate_hold(TYPE_SCOPE))
        running, held, window, hold = await pipe.execute()
    return LimitUsage(int(running), int(held), int(window),
                      int(hold) if int(hold) > 0 else None)
