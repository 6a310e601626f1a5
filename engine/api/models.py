"""Request and response bodies (pydantic), which also make the OpenAPI document."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from streamjobs import contract
from streamjobs.contract import JobState
from streamjobs.counts import TypeStats
from streamjobs.dead import DeadJob
from streamjobs.listing import SCORE_CURSOR, JobSummary
from streamjobs.producer import JobSpec

# The engine's patterns, anchored for JSON Schema (which searches rather than matches).
JOB_ID_PATTERN = f"^{contract.JOB_ID_PATTERN}$"
TYPE_PATTERN = f"^{contract.TYPE_NAME_PATTERN}$"
STREAM_ID_PATTERN = f"^{contract.STREAM_ID_PATTERN}$"
HEADER_NAME_PATTERN = f"^{contract.HEADER_NAME_PATTERN}$"
LIST_CURSOR_PATTERN = f"^(?:{contract.STREAM_ID_PATTERN}|{SCORE_CURSOR.pattern})$"
#: Ten years: a longer delay is a mistake, not a schedule.
MAX_DELAY_S = 10 * 365 * 86400
MAX_BULK = 5000
#: Year 5138: a larger epoch is a unit mistake (milliseconds sent as seconds).
MAX_EPOCH_S = 1e11


# ---- request bodies: strict JSON, strict numbers -----------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number: send finite numbers only")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def loads_strict(body: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, finite numbers only (no NaN, Infinity, 1e400).

    Every refusal is a ``json.JSONDecodeError``, which FastAPI answers as a 422.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError("the body is not UTF-8", repr(body[:80]), e.start) from e
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # our parse hooks, or an integer of thousands of digits
        raise json.JSONDecodeError(str(e), text, 0) from e
    except RecursionError as e:
        raise json.JSONDecodeError("nested too deeply", text, 0) from e


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


def _run_at(value: Any) -> Any:
    """Epoch seconds become a datetime here; texts are left to pydantic's ISO 8601 parser.
    (Lax pydantic would read ``true`` as 1 and ``-1`` as a time before the epoch.)"""
    if isinstance(value, bool) or not isinstance(value, int | float | str | datetime):
        raise ValueError("give an ISO 8601 datetime text or epoch seconds")
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_EPOCH_S:
            raise ValueError(f"epoch seconds must be between 0 and {MAX_EPOCH_S:g}")
        return datetime.fromtimestamp(value, UTC)
    return value


HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)]
RunAt = Annotated[datetime, BeforeValidator(_run_at), WithJsonSchema({"anyOf": [
    {"type": "string", "format": "date-time"},
    {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_S},
]})]


class EnqueueRequest(BaseModel):
    """One job. Only ``payload`` is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"payload": {"to": "a@example.com"}},
                     {"payload": {"n": 1}, "id": "order-42", "delay": 30,
                      "headers": {"traceparent": "00-abc-def-01"}}],
    })

    payload: Any = Field(description="the job's argument(s): any JSON value")
    id: str | None = Field(None, pattern=JOB_ID_PATTERN,
                           description="job id chosen by the producer (idempotent: an existing "
                                       "id is refused with 409); default: generated")
    # strict: true, "5" and 2.0-for-an-int are refused, never coerced.
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_S, allow_inf_nan=False, strict=True,
                                description="seconds from now (server clock)")
    run_at: RunAt | None = Field(
        None, description="when to run: ISO 8601 datetime (naive means UTC) or epoch seconds")
    max_attempts: int | None = Field(None, ge=1, le=10_000, strict=True,
                                     description="attempts before the dead stream; default: "
                                                 "the type's policy")
    timeout: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False, strict=True,
                                  description="seconds one attempt may run; default: policy")
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, max_length=64,
        description="string headers handed to the handler (e.g. traceparent)")

    def spec(self) -> JobSpec:
        run_at = self.run_at
        if isinstance(run_at, datetime) and run_at.tzinfo is None:
            run_at = run_at.replace(tzinfo=UTC)
        return JobSpec(self.payload, self.id, self.delay, run_at, self.max_attempts,
                       self.timeout, self.headers)


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=MAX_BULK)


class Enqueued(BaseModel):
    id: str
    state: str = Field(description="waiting or delayed")


class BulkItem(Enqueued):
    duplicate: bool = Field(description="true: a job with this id existed and was left as is; "
                                        "state is that job's state")


class BulkEnqueued(BaseModel):
    jobs: list[BulkItem] = Field(description="one per job, in request order")


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong and what to do about it")
    id: str | None = None
    state: str | None = None


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; "
                                                "null on the last page")


class Cancelled(BaseModel):
    id: str
    state: str = JobState.CANCELLED
    previous_state: str


class DeadPage(BaseModel):
    jobs: list[DeadJob]
    next_cursor: str | None


class Retried(BaseModel):
    id: str
    state: str = JobState.WAITING


class Count(BaseModel):
    count: int


class TypesOut(BaseModel):
    types: list[TypeStats]


class RunningJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str | None = None
    id: str | None = None
    attempt: int | None = None
    started_at: int | None = Field(None, description="ms since the epoch (worker clock)")


class WorkerOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    host: str | None = None
    pid: int | None = None
    types: list[str] = []
    concurrency: int | None = None
    in_flight: int | None = None
    started_at: int | None = None
    last_heartbeat: int | None = None
    running: list[RunningJob] = Field([], description="the jobs it runs now (oldest "
                                                      "first, at most 100)")
    policies: dict[str, dict[str, Any]] = Field({}, description="each type's retry policy "
                                                               "as this worker runs it")


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class Status(BaseModel):
    status: str


class TypeDetail(BaseModel):
    stats: TypeStats
    policy: dict[str, Any] | None = Field(description="the type's retry policy, as its live "
                                                      "workers run it; null: no live worker")
    workers: int = Field(description="live workers that run the type")


class ThroughputSeries(BaseModel):
    type: str
    completed: list[float] = Field(description="jobs completed per minute")
    failed: list[float] = Field(description="failed attempts per minute (retried or dead)")


class ThroughputOut(BaseModel):
    start: int = Field(description="start of the first minute, ms since the epoch")
    minute_ms: int = 60_000
    types: list[ThroughputSeries]
