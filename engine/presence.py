"""Which workers are alive: the heartbeats each worker writes, read for the API and CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streamjobs import replies
from streamjobs.contract import Heartbeat
from streamjobs.counts import server_ms
from streamjobs.keys import worker_key, workers_key
from streamjobs.records import opt_int

if TYPE_CHECKING:
    from redis.asyncio import Redis


#: A worker whose heartbeat is older than this is not listed (3 missed heartbeats).
WORKER_STALE_MS = 15_000
_NUMBERS = (Heartbeat.PID, Heartbeat.CONCURRENCY, Heartbeat.IN_FLIGHT, Heartbeat.STARTED_AT,
            Heartbeat.LAST_HEARTBEAT)


async def live_workers(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Workers whose heartbeat is recent, from the registry and each worker's hash (one
    slot: on a cluster, one node)."""
    now_ms = server_ms(await redis.time())
    names = replies.members(await redis.zrange(workers_key(prefix), now_ms - WORKER_STALE_MS,
                                               "+inf", byscore=True))
    async with redis.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.hgetall(worker_key(prefix, n.decode("utf-8", "replace")))
        records = await pipe.execute()
    out = []
    for rec in records:
        if not rec:
            continue  # expired between the two reads
        d = {k.decode(): v.decode("utf-8", "replace") for k, v in rec.items()}
        for k in _NUMBERS:
            d[k.value] = opt_int(rec.get(k.b))
        types = d.get(Heartbeat.TYPES, "")
        d[Heartbeat.TYPES.value] = [t for t in types.split(",") if t]
        running = _json(rec.get(Heartbeat.RUNNING.b), list)
        d[Heartbeat.RUNNING.value] = [r for r in running if isinstance(r, dict)]
        d[Heartbeat.POLICIES.value] = _json(rec.get(Heartbeat.POLICIES.b), dict)
        out.append(d)
    return sorted(out, key=lambda w: str(w.get(Heartbeat.NAME)))


def _json(raw: bytes | None, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """A JSON field of a heartbeat; absent (an older worker) or unreadable is empty."""
    try:
        value = orjson.loads(raw) if raw else kind()
    except orjson.JSONDecodeError:
        return kind()
    return value if isinstance(value, kind) else kind()


def policies_of(workers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each type's policy as its live workers run it (the first worker's, by name)."""
    out: dict[str, dict[str, Any]] = {}
    for w in workers:
        for type_, policy in (w.get(Heartbeat.POLICIES.value) or {}).items():
            if isinstance(policy, dict):
                out.setdefault(type_, policy)
    return out
