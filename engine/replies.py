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
