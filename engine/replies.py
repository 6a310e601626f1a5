"""Reply shapes of the stream commands, for a client with ``decode_responses=False``.

redis-py types its replies as wide unions; these casts state what the server sends for
the commands streamjobs uses, in one place.
"""

from __future__ import annotations

from typing import Any, cast

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
