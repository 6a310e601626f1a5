"""Request and response bodies (pydantic), which also make the OpenAPI document."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

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
from streamjobs.contract import DedupMode, JobState, ParentPolicy, Priority
from streamjobs.counts import TypeStats
from streamjobs.dead import DeadJob
from streamjobs.job import MAX_URL
from streamjobs.limits import LimitUsage
from streamjobs.listing import LEVEL_CURSOR, SCORE_CURSOR, JobSummary
from streamjobs.producer import CancelOutcome, JobSpec
from streamjobs.schedules import Schedule
from streamjobs.workflows import Step

# The engine's patterns, anchored for JSON Schema (which searches rather than matches).
JOB_ID_PATTERN = f"^{contract.JOB_ID_PATTERN}$"
TYPE_PATTERN = f"^{contract.TYPE_NAME_PATTERN}$"
STREAM_ID_PATTERN = f"^{contract.STREAM_ID_PATTERN}$"
HEADER_NAME_PATTERN = f"^{contract.HEADER_NAME_PATTERN}$"
LIST_CURSOR_PATTERN = (f"^(?:{LEVEL_CURSOR.pattern}|{contract.STREAM_ID_PATTERN}"
                       f"|{SCORE_CURSOR.pattern})$")
#: A parent of a job: ``<type>/<id>``.
#: (The type's own rules, such as no ``..``, are checked when it is looked up.)
PARENT_REF_PATTERN = f"^[A-Za-z0-9_.\\-]{{1,64}}/{contract.JOB_ID_PATTERN}$"
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
    expires_in: float | None = Field(
        None, ge=0, le=MAX_DELAY_S, allow_inf_nan=False, strict=True,
        description="seconds from now (server clock): a job not started by then never runs "
                    "and ends `expired`")
    expires_at: RunAt | None = Field(
        None, description="like expires_in, as a time: ISO 8601 datetime or epoch seconds")
    dedup_key: str | None = Field(
        None, pattern=JOB_ID_PATTERN,
        description="deduplication key: while another job of this key answers for it (by "
                    "dedup_mode), that job's id is returned with `deduplicated: true`")
    dedup_mode: DedupMode | None = Field(
        None, description="unique (default): one waiting, delayed or running job per key; "
                          "throttle: while the key's job exists or for dedup_ttl; debounce: "
                          "replace the key's job not started yet (payload and start time)")
    dedup_ttl: float | None = Field(None, ge=0, le=MAX_DELAY_S, allow_inf_nan=False,
                                    strict=True, description="the key's window in seconds")
    key: str | None = Field(None, min_length=1, max_length=256,
                            description="a partitioned type's jobs of one key go to one "
                                        "partition, in order; default: round-robin")
    webhook: str | None = Field(None, min_length=8, max_length=MAX_URL,
                                pattern=r"^https?://\S+$",
                                description="an http(s) URL POSTed when the job completes "
                                            "or ends dead (signed with the delivering "
                                            "worker's webhook_secret)")
    priority: Priority | None = Field(
        None, description="high, normal (default) or low: workers start every waiting job "
                          "of a higher level of the type before any of a lower one")
    after: list[Annotated[str, StringConstraints(pattern=PARENT_REF_PATTERN)]] = Field(
        default_factory=list, max_length=1000,
        description="parents, each `<type>/<id>`: the job is blocked until every one has "
                    "ended, then runs with their results (no delay or run_at with it)")
    on_parent_failure: ParentPolicy | None = Field(
        None, description="fail (default: the job ends dead), run or drop (it ends "
                          "cancelled) when a parent ends dead, cancelled or expired")

    def spec(self) -> JobSpec:
        run_at, expires_at = _utc(self.run_at), _utc(self.expires_at)
        return JobSpec(self.payload, self.id, self.delay, run_at, self.max_attempts,
                       self.timeout, self.headers, self.expires_in, expires_at,
                       self.dedup_key, self.dedup_mode, self.dedup_ttl, self.key, self.webhook,
                       self.priority, list(self.after), self.on_parent_failure)


def _utc(value: datetime | None) -> datetime | None:
    """A naive datetime is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class WorkflowStep(BaseModel):
    """One job of a workflow: its name here, its type, and the steps it runs after."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, json_schema_extra={"pattern": TYPE_PATTERN},
                      description="the step's name within this workflow")
    type: str = Field(max_length=64, json_schema_extra={"pattern": TYPE_PATTERN})
    payload: Any = None
    after: list[str] = Field(default_factory=list, max_length=1000,
                             description="names of steps of this workflow to run after")
    on_parent_failure: ParentPolicy | None = None
    id: str | None = Field(None, pattern=JOB_ID_PATTERN)
    max_attempts: int | None = Field(None, ge=1, le=10_000, strict=True)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False, strict=True)
    headers: dict[HeaderName, str] = Field(default_factory=dict, max_length=64)
    priority: Priority | None = None

    def step(self) -> Step:
        options: dict[str, Any] = {
            k: v for k, v in (("job_id", self.id), ("max_attempts", self.max_attempts),
                              ("timeout", self.timeout), ("priority", self.priority))
            if v is not None}
        if self.headers:
            options["headers"] = dict(self.headers)
        return Step(self.type, self.payload, self.name, list(self.after),
                    self.on_parent_failure, options)


class WorkflowRequest(BaseModel):
    """A workflow: steps that run after other steps (an acyclic graph)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"steps": [
        {"name": "fetch", "type": "fetch", "payload": {"url": "https://example.com"}},
        {"name": "parse", "type": "parse", "after": ["fetch"]},
        {"name": "store", "type": "store", "after": ["parse"]}]}]})

    steps: list[WorkflowStep] = Field(min_length=1, max_length=1000)


class WorkflowJob(BaseModel):
    type: str
    id: str
    state: str = Field(description="waiting, or blocked until its parents end")


class WorkflowOut(BaseModel):
    jobs: dict[str, WorkflowJob] = Field(description="each step's job, by step name")


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[EnqueueRequest] = Field(min_length=1, max_length=MAX_BULK)


class Enqueued(BaseModel):
    id: str
    state: str = Field(description="waiting or delayed (a deduplicated answer: that "
                                   "job's state)")
    deduplicated: bool = Field(default=False, description="true: a job of the same dedup_key "
                                                  "answers for this one (its id is given)")


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
    state: str = Field(default=JobState.CANCELLED, description="cancelled, or running when the "
                                                       "attempt runs on (see outcome)")
    previous_state: str
    outcome: CancelOutcome = Field(
        default=CancelOutcome.CANCELLED,
        description="cancelled; uninterruptible: a sync handler in a thread cannot be "
                    "stopped (the request is recorded: a failure is not retried); "
                    "requested: recorded, its worker has not answered yet; finished: it "
                    "ended before the request reached it")


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


# ---- webhooks ------------------------------------------------------------------------------


HookEventName = Literal["completed", "dead"]
ALL_EVENTS: tuple[HookEventName, ...] = ("completed", "dead")


class WebhookRequest(BaseModel):
    """A webhook of a type: its URL, the events it is called for, its signing secret."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"url": "https://example.com/hooks/email", "events": ["dead"],
                      "secret": "a long random string"}],
    })

    url: str = Field(min_length=8, max_length=MAX_URL, pattern=r"^https?://\S+$")
    events: list[HookEventName] = Field(
        default_factory=lambda: list(ALL_EVENTS), min_length=1, max_length=2)
    secret: str = Field("", max_length=256, description="HMAC-SHA256 key of the "
                        "X-Streamjobs-Signature header; empty: unsigned")


class WebhookOut(BaseModel):
    type: str
    name: str
    url: str
    events: list[str]
    signed: bool = Field(description="true: calls carry X-Streamjobs-Signature")


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


# ---- schedules and paused types -----------------------------------------------------------


class ScheduleRequest(BaseModel):
    """A schedule: ``type`` and either ``cron`` or ``every``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"type": "report", "cron": "0 3 * * *", "tz": "Europe/Paris",
                      "payload": {"kind": "daily"}},
                     {"type": "ping", "every": 30, "payload": {}}],
    })

    type: str = Field(max_length=64, json_schema_extra={"pattern": TYPE_PATTERN},
                      description="job type each tick enqueues")
    cron: str | None = Field(None, max_length=200,
                             description="5 fields, or 6 with the seconds first")
    every: float | None = Field(None, ge=1, le=MAX_DELAY_S, allow_inf_nan=False,
                                description="interval in seconds (instead of cron)")
    tz: str = Field("UTC", max_length=64, description="IANA time zone of the cron expression")
    payload: Any = Field(None, description="each tick's job payload")
    max_attempts: int | None = Field(None, ge=1, le=10_000, strict=True)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, allow_inf_nan=False, strict=True)
    headers: dict[HeaderName, str] = Field(default_factory=dict, max_length=64)
    paused: bool = False
    priority: Priority | None = Field(None, description="each tick's priority level")

    def schedule(self, name: str) -> Schedule:
        return Schedule(name, self.type, cron=self.cron, every=self.every, tz=self.tz,
                        payload=self.payload, max_attempts=self.max_attempts,
                        timeout=self.timeout, headers=dict(self.headers), paused=self.paused,
                        priority=self.priority)


class SchedulesOut(BaseModel):
    schedules: list[Schedule]


class RanNow(BaseModel):
    id: str


class TypePaused(BaseModel):
    type: str
    paused: bool
    #: False when the type already was in that state.
    changed: bool


class TypeDetail(BaseModel):
    stats: TypeStats
    policy: dict[str, Any] | None = Field(description="the type's retry policy, as its live "
                                                      "workers run it; null: no live worker")
    workers: int = Field(description="live workers that run the type")
    limits: LimitUsage = Field(description="what the type's limits hold now (its own "
                                           "scope: max_running and rate_limit)")


class ThroughputSeries(BaseModel):
    type: str
    completed: list[float] = Field(description="jobs completed per minute")
    failed: list[float] = Field(description="failed attempts per minute (retried or dead)")


class ThroughputOut(BaseModel):
    start: int = Field(description="start of the first minute, ms since the epoch")
    minute_ms: int = 60_000
    types: list[ThroughputSeries]
