"""Reply shapes of the stream commands, for a client with ``decode_responses=False``.

redis-py types its replies as wide unions; these casts state what the server sends for
the commands streamjobs uses, in one place.
"""

from __future__ import annotations

from typing import Any, cast

from streamjobs.contract import fields_of

Fields = dict[bytes, bytes]
Entries = list[tuple[bytes, Fields]]
#: XREADGROUP: [(stream, [(entry id, fields), ...]), ...]
StreamReads = list[tuple[bytes, Entries]]
#: XPENDING with a range: [{"message_id": b"...", "consumer": b"...", ...}, ...]
PendingRows = list[dict[str, Any]]


def entries(reply: Any) -> Entries:
    return cast("Entries", reply or [])


def stream_reads(reply: Any) -> StreamReads:
    return cast("StreamReads", reply or [])


def read_stream_names(reply: Any) -> list[bytes]:
    """The streams an XREAD answered with (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    return list(reply) if isinstance(reply, dict) else [stream for stream, _ in reply]


def read_groups(response: Any, **options: Any) -> StreamReads:
    """XREADGROUP's reply (RESP2 list or RESP3 map), each entry's fields read by
    :func:`streamjobs.contract.fields_of`: repeated field names are kept track of, not
    silently collapsed. Installed as the worker client's response callback."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    return [(stream, [(e, fields_of(f) if f else {}) for e, f in entries])
            for stream, entries in streams]


def pending_rows(reply: Any) -> PendingRows:
    return cast("PendingRows", reply or [])


#: ZRANGE ... WITHSCORES: [(member, score), ...]
Scored = list[tuple[bytes, float]]


def hash_fields(reply: Any) -> Fields:
    """HGETALL: {field: value} (empty when the key does not exist)."""
    return cast("Fields", reply or {})


def scored(reply: Any) -> Scored:
    return cast("Scored", reply or [])


def members(reply: Any) -> list[bytes]:
    """ZRANGE without scores: [member, ...]."""
    return cast("list[bytes]", reply or [])


def member_set(reply: Any) -> set[bytes]:
    """SMEMBERS: {member, ...}."""
    return cast("set[bytes]", reply or set())
