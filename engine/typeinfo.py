"""One type described for an operator: its counts, its policy (limits included) as its
live workers run it, how many run it, and what its limits hold now. One reader for
``GET /types/{type}`` and ``streamjobs types show``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamjobs.counts import type_stats
from streamjobs.limits import limit_usage
from streamjobs.presence import live_workers, policies_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from streamjobs.keys import TypeKeys


async def describe_type(redis: Redis, tk: TypeKeys) -> dict[str, Any]:
    """``{stats, policy, workers, limits}`` (policy None: no live worker)."""
    stats = await type_stats(redis, tk)
    serving = [w for w in await live_workers(redis, tk.prefix)
               if tk.type in w.get("types", ())]
    return {"stats": stats.to_dict(), "policy": policies_of(serving).get(tk.type),
            "workers": len(serving), "limits": (await limit_usage(redis, tk)).to_dict()}
