"""Request and response bodies (pydantic), which also make the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from streamjobs.counts import TypeStats
from streamjobs.dead import DeadJob
from streamjobs.listing import JobSummary
from streamjobs.producer import JobSpec

JOB_ID_PATTERN = r"^[!-~]{1,128}$"
TYPE_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
STREAM_ID_PATTERN = r"^\d{1,20}-\d{1,20}$"
#: Ten years: a longer delay is a mistake, not a schedule.
MAX_DELAY_S = 10 * 365 * 86400
MAX_BULK = 5000

HeaderName = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,128}$")]
EpochSeconds = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]


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
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_S, allow_inf_nan=False,
                                description="seconds from now (server clock)")
    run_at: datetime | EpochSeconds | None = Field(
        None, description="when to run: ISO 8601 datetime (naive means UTC) or epoch seconds")
    max_attempts: int | None = Field(None, ge=1, le=10_000,
                                     description="attempts before the dead stream; default: "
                                                 "the type's policy")
    timeout: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False,
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
    state: str = "cancelled"
    previous_state: str


class DeadPage(BaseModel):
    jobs: list[DeadJob]
    next_cursor: str | None


class Retried(BaseModel):
    id: str
    state: str = "waiting"


class Count(BaseModel):
    count: int


class TypesOut(BaseModel):
    types: list[TypeStats]


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


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class Status(BaseModel):
    status: str
