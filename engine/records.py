"""What every read-only record shares: ``to_dict`` for JSON, and decoders for the byte
strings Redis returns (empty and missing both read as None)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, cast

import orjson

from streamjobs.contract import RESERVED, Wire


class Record:
    """Mixin for the read-only records: ``to_dict`` gives JSON-ready fields (states are
    ``StrEnum`` members, which serialise as their text). The API uses these dataclasses
    as its response schemas directly."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(cast("Any", self))}


def text(v: bytes | None) -> str | None:
    return v.decode("utf-8", "replace") if v is not None and v != b"" else None


def opt_int(v: bytes | None) -> int | None:
    try:
        return int(v) if v not in (None, b"") else None
    except ValueError:
        return None


def json_or_text(v: bytes | None) -> Any:
    if v in (None, b""):
        return None
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return v.decode("utf-8", "replace")


def split_fields(fields: dict[bytes, bytes], prefix: bytes = b"") -> tuple[Any, dict[str, str]]:
    """(payload, headers) from job fields, optionally stored under a name prefix."""
    payload: Any = None
    headers: dict[str, str] = {}
    for k, v in fields.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):].decode("utf-8", "replace")
        if name == Wire.PAYLOAD:
            payload = json_or_text(v)
        elif name not in RESERVED:
            headers[name] = v.decode("utf-8", "replace")
    return payload, headers
