"""The wire format: one frozen :class:`Job` and its stream-entry fields.

A stream entry is a flat field/value list; only ``payload`` is required. See
``docs/protocol.md`` for the contract producers in any language follow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streamjobs.contract import (
    DECIMAL,
    DEDUP_MODES,
    INTEGER,
    JOB_ID,
    MAX_JOB_FIELDS,
    PRIORITIES,
    RESERVED,
    RESERVED_B,
    Priority,
    Wire,
    check_payload_size,
    entry_problem,
    job_id_of,
)
from streamjobs.errors import DecodeError, InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Mapping

    from streamjobs.progress import JobContext


def check_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise InvalidArgument(
            f"invalid job id {job_id!r}: 1-128 printable ASCII characters, no spaces"
        )
    return job_id


#: Longest ``webhook`` URL.
MAX_URL = 2048


def check_url(url: str) -> str:
    """``url`` if it can be a webhook's (http or https), else raise InvalidArgument."""
    if (not isinstance(url, str) or not url.startswith(("http://", "https://"))
            or len(url) > MAX_URL or any(c.isspace() for c in url)):
        raise InvalidArgument(f"invalid webhook URL {url!r}: an http:// or https:// URL of "
                              f"at most {MAX_URL} characters, no spaces")
    return url


def new_job_ids(n: int) -> list[str]:
    """``n`` fresh job ids, made on the client before the enqueue is sent: 48 bits of
    ms time then 80 random bits, in hex (a UUIDv7's layout; 32 characters)."""
    head = f"{time.time_ns() // 1_000_000:012x}"
    rand = os.urandom(10 * n).hex()
    return [head + rand[i : i + 20] for i in range(0, 20 * n, 20)]


def new_token() -> str:
    """The mark of one enqueue call of a caller-chosen id."""
    return os.urandom(8).hex()


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
    #: Bound by the worker: where progress and log lines go (None: nowhere, e.g. a Job
    #: built by hand, or one run in a child process).
    context: JobContext | None = field(default=None, repr=False, compare=False)
    #: A job enqueued with ``after``: each parent's result (None when it had none or did
    #: not complete) and final state, by parent ref (``"<type>/<id>"``; a partitioned
    #: type's ``"<type>#<k>/<id>"``).
    parent_results: Mapping[str, Any] = field(default_factory=dict)
    parent_states: Mapping[str, str] = field(default_factory=dict)

    @property
    def parent_result(self) -> Any:
        """The result of the one parent (a chain's previous step); None without one."""
        return next(iter(self.parent_results.values()), None)

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0 to 1) and a message: kept in the job's record, shown by
        status, and sent as a ``progress`` event."""
        if self.context is not None:
            await self.context.progress(fraction, message)

    def log(self, text: str) -> None:
        """A log line kept with the job (its last LOG_LINES lines, for its retention);
        written with the next progress or when the attempt ends."""
        if self.context is not None:
            self.context.log(text)

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
        context: JobContext | None = None, job_id: str | None = None,
    ) -> Job:
        """Decode a stream entry; raises DecodeError with the reason when malformed.
        ``job_id``: its ``job_id_of`` when the caller has it already."""
        problem = entry_problem(fields)
        if problem is not None:
            raise DecodeError(problem)
        raw = fields[_PAYLOAD]
        if max_payload_bytes is not None:
            check_payload_size(raw, max_payload_bytes)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise DecodeError(f"payload is not valid JSON: {e}") from e
        headers = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                   for k, v in fields.items() if k not in RESERVED_B}
        # entry_problem() checked every number: the conversions below cannot fail.
        get = fields.get
        attempts, max_attempts = get(_ATTEMPTS), get(_MAX_ATTEMPTS)
        timeout, enqueued_at = get(_TIMEOUT), get(_ENQUEUED_AT)
        return cls(
            type=type_,
            id=job_id if job_id is not None else job_id_of(entry_id, fields),
            payload=payload,
            entry_id=entry_id,
            attempt=(int(attempts) if attempts else 0) + 1,
            max_attempts=int(max_attempts) if max_attempts else None,
            timeout=float(timeout) if timeout else None,
            enqueued_at=int(enqueued_at) if enqueued_at else _entry_ms(entry_id),
            headers=headers,
            deliveries=deliveries,
            context=context,
            **(_parents(fields) if _PARENT_RESULTS in fields or _PARENT_STATES in fields
               else _NO_PARENTS),
        )


_PAYLOAD, _ATTEMPTS, _MAX_ATTEMPTS = Wire.PAYLOAD.b, Wire.ATTEMPTS.b, Wire.MAX_ATTEMPTS.b
_TIMEOUT, _ENQUEUED_AT = Wire.TIMEOUT.b, Wire.ENQUEUED_AT.b
_PARENT_RESULTS, _PARENT_STATES = Wire.PARENT_RESULTS.b, Wire.PARENT_STATES.b
_NO_PARENTS: dict[str, Any] = {}


def _parents(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """``parent_results`` and ``parent_states`` of a released blocked job (none: {})."""
    out: dict[str, Any] = {}
    for name, attr in ((Wire.PARENT_RESULTS.b, "parent_results"),
                       (Wire.PARENT_STATES.b, "parent_states")):
        raw = fields.get(name)
        if raw:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise DecodeError(f"{name.decode()} is not valid JSON: {e}") from e
            if isinstance(value, dict):
                out[attr] = value
    return out


@dataclass(frozen=True, slots=True)
class Flow:
    """Flow-control options of one job (wire fields, ``docs/protocol.md``)."""

    #: Ms from the enqueue (server clock) or ms since the epoch: not started by then, the
    #: job ends ``expired``.
    expires_in_ms: int | None = None
    expires_at_ms: int | None = None
    dedup_key: str | None = None
    #: A :class:`streamjobs.contract.DedupMode` value (default: unique).
    dedup_mode: str | None = None
    dedup_ttl_ms: int | None = None
    #: The job's key for ``max_running_per_key`` (``Producer.enqueue(key=...)``).
    limit_key: str | None = None
    #: A :class:`streamjobs.contract.Priority` value (default: normal).
    priority: str | None = None

    def fields(self) -> list[bytes | str]:
        flat = priority_fields(self.priority)
        for name, ms in ((Wire.EXPIRES_IN, self.expires_in_ms),
                         (Wire.EXPIRES_AT, self.expires_at_ms),
                         (Wire.DEDUP_TTL, self.dedup_ttl_ms)):
            if ms is not None:
                if not 0 <= ms < 10**15:
                    raise InvalidArgument(f"{name} must be from 0 to 10**15 - 1 ms")
                flat += [name, str(int(ms))]
        if self.dedup_key is not None:
            if not JOB_ID.fullmatch(self.dedup_key):
                raise InvalidArgument(f"invalid dedup_key {self.dedup_key!r}: 1-128 printable "
                                      "ASCII characters, no spaces")
            flat += [Wire.DEDUP_KEY, self.dedup_key]
        if self.dedup_mode is not None:
            if self.dedup_mode not in DEDUP_MODES:
                raise InvalidArgument(f"dedup_mode must be one of {sorted(DEDUP_MODES)}, "
                                      f"not {self.dedup_mode!r}")
            if self.dedup_key is None:
                raise InvalidArgument("dedup_mode needs a dedup_key")
            flat += [Wire.DEDUP_MODE, self.dedup_mode]
        if self.limit_key is not None:
            flat += [Wire.LIMIT_KEY, self.limit_key]
        return flat


NO_FLOW = Flow()


def priority_fields(priority: str | None) -> list[bytes | str]:
    """The wire fields of a job's priority (none for normal)."""
    if priority is None:
        return []
    if priority not in PRIORITIES:
        raise InvalidArgument(f"priority must be one of high, normal, low, not {priority!r}")
    return [] if priority == Priority.NORMAL else [Wire.PRIORITY, priority]


def encode_fields(
    payload: Any, *, job_id: str = "", max_attempts: int | None = None,
    timeout: float | None = None, headers: Mapping[str, str] | None = None,
    payload_json: bytes | None = None, flow: Flow = NO_FLOW, webhook: str | None = None,
) -> list[bytes | str]:
    """Build the flat XADD field list of one job (the producer side of the contract)."""
    body = payload_json if payload_json is not None else dumps(payload)
    flat: list[bytes | str] = [Wire.PAYLOAD, body]
    if job_id:
        flat += [Wire.ID, job_id]
    if max_attempts is not None:
        text = str(int(max_attempts))
        if max_attempts < 1 or not INTEGER.fullmatch(text.encode()):
            raise InvalidArgument("max_attempts must be an integer from 1 to 10**15 - 1")
        flat += [Wire.MAX_ATTEMPTS, text]
    if timeout is not None:
        flat += [Wire.TIMEOUT, _decimal(timeout)]
    if flow is not NO_FLOW:
        flat += flow.fields()
    if webhook is not None:
        flat += [Wire.WEBHOOK, check_url(webhook)]
    for k, v in (headers or {}).items():
        if k in RESERVED:
            raise InvalidArgument(f"header name {k!r} is reserved by the wire format")
        flat += [k, str(v)]
    if len(flat) > 2 * MAX_JOB_FIELDS:
        raise InvalidArgument(f"a job has at most {MAX_JOB_FIELDS} fields (payload, options "
                              "and headers; the engine adds up to 3 of its own)")
    return flat


def _entry_ms(entry_id: str) -> int | None:
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def _decimal(seconds: float) -> str:
    """``timeout`` as the wire writes it: a plain decimal (never ``1e-05`` or ``inf``)."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".") if seconds == seconds else "nan"
    if not DECIMAL.fullmatch(text.encode()) or not float(text) > 0:
        raise InvalidArgument("timeout must be a number of seconds from 1e-9 to 999999999")
    return text
