"""The wire format: one frozen :class:`Job` and its stream-entry fields.

A stream entry is a flat field/value list; only ``payload`` is required. See
``docs/protocol.md`` for the contract producers in any language follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streamjobs.contract import JOB_ID, RESERVED, Wire, check_payload_size, job_id_of
from streamjobs.errors import DecodeError, InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Mapping


def check_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise InvalidArgument(
            f"invalid job id {job_id!r}: 1-128 printable ASCII characters, no spaces"
        )
    return job_id


def dumps(value: Any) -> bytes:
    """JSON-encode a payload or result; raises DecodeError for non-JSON values."""
    try:
        return orjson.dumps(value)
    except TypeError as e:
        raise DecodeError(f"value is not JSON-serialisable: {e}") from e


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt of a job, as a handler sees it."""

    type: str
    id: str
    payload: Any
    entry_id: str = ""
    #: 1-based number of this attempt (failed attempts so far + 1).
    attempt: int = 1
    max_attempts: int | None = None
    timeout: float | None = None
    #: Enqueue time, ms since the epoch (the entry id's time when not given).
    enqueued_at: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Times this entry was delivered (> 1 after a worker died running it).
    deliveries: int = 1

    def to_fields(self) -> list[bytes | str]:
        """The entry fields for XADD, flat: ``[name, value, ...]``."""
        return encode_fields(
            self.payload, job_id=self.id, max_attempts=self.max_attempts,
            timeout=self.timeout, headers=self.headers,
        )

    @classmethod
    def from_fields(
        cls, type_: str, entry_id: str, fields: Mapping[bytes, bytes],
        *, max_payload_bytes: int | None = None, deliveries: int = 1,
    ) -> Job:
        """Decode a stream entry; raises DecodeError with the reason when malformed."""
        raw = fields.get(Wire.PAYLOAD.b)
        if raw is None:
            raise DecodeError("entry has no payload field")
        if max_payload_bytes is not None:
            check_payload_size(raw, max_payload_bytes)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise DecodeError(f"payload is not valid JSON: {e}") from e
        headers: dict[str, str] = {}
        extra: dict[str, bytes] = {}
        for k, v in fields.items():
            name = k.decode("utf-8", "replace")
            if name in RESERVED:
                extra[name] = v
            elif name != Wire.PAYLOAD:
                headers[name] = v.decode("utf-8", "replace")
        return cls(
            type=type_,
            id=job_id_of(entry_id, fields),
            payload=payload,
            entry_id=entry_id,
            attempt=_int(extra, Wire.ATTEMPTS, 0, minimum=0) + 1,
            max_attempts=_opt_int(extra, Wire.MAX_ATTEMPTS),
            timeout=_opt_float(extra, Wire.TIMEOUT),
            enqueued_at=_opt_int(extra, Wire.ENQUEUED_AT, minimum=0) or _entry_ms(entry_id),
            headers=headers,
            deliveries=deliveries,
        )


def encode_fields(
    payload: Any, *, job_id: str = "", max_attempts: int | None = None,
    timeout: float | None = None, headers: Mapping[str, str] | None = None,
    payload_json: bytes | None = None,
) -> list[bytes | str]:
    """Build the flat XADD field list of one job (the producer side of the contract)."""
    body = payload_json if payload_json is not None else dumps(payload)
    flat: list[bytes | str] = [Wire.PAYLOAD, body]
    if job_id:
        flat += [Wire.ID, job_id]
    if max_attempts is not None:
        if max_attempts < 1:
            raise InvalidArgument("max_attempts must be >= 1")
        flat += [Wire.MAX_ATTEMPTS, str(int(max_attempts))]
    if timeout is not None:
        if timeout <= 0:
            raise InvalidArgument("timeout must be > 0")
        flat += [Wire.TIMEOUT, repr(float(timeout))]
    for k, v in (headers or {}).items():
        if k in RESERVED:
            raise InvalidArgument(f"header name {k!r} is reserved by the wire format")
        flat += [k, str(v)]
    return flat


def _entry_ms(entry_id: str) -> int | None:
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def _int(extra: Mapping[str, bytes], name: str, default: int, *, minimum: int) -> int:
    value = _opt_int(extra, name, minimum=minimum)
    return default if value is None else value


def _opt_int(extra: Mapping[str, bytes], name: str, *, minimum: int = 1) -> int | None:
    raw = extra.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as e:
        raise DecodeError(f"{name} is not an integer: {raw[:40]!r}") from e
    if value < minimum:
        raise DecodeError(f"{name} must be >= {minimum}, got {value}")
    return value


def _opt_float(extra: Mapping[str, bytes], name: str) -> float | None:
    raw = extra.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError as e:
        raise DecodeError(f"{name} is not a number: {raw[:40]!r}") from e
    if not value > 0 or value == float("inf"):
        raise DecodeError(f"{name} must be a positive number, got {value}")
    return value
