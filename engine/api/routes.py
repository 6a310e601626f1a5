"""The routes. Engine exceptions are not caught here (``errors.py`` maps them), except
where a route adds what the caller should do next."""

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError, ResponseError
from starlette.exceptions import HTTPException

from streamjobs import schedules
from streamjobs.api.errors import ApiError, error_response, respond
from streamjobs.api.models import (
    JOB_ID_PATTERN,
    LIST_CURSOR_PATTERN,
    STREAM_ID_PATTERN,
    TYPE_PATTERN,
    BulkEnqueued,
    BulkItem,
    BulkRequest,
    Cancelled,
    Count,
    DeadPage,
    Enqueued,
    EnqueueRequest,
    ErrorBody,
    JobPage,
    RanNow,
    Retried,
    ScheduleRequest,
    SchedulesOut,
    Status,
    StrictJsonRequest,
    ThroughputOut,
    TypeDetail,
    TypePaused,
    TypesOut,
    WebhookOut,
    WebhookRequest,
    WebhooksOut,
    WorkersOut,
    WorkflowJob,
    WorkflowOut,
    WorkflowRequest,
)
from streamjobs.api.state import ApiState
from streamjobs.codes import Code
from streamjobs.contract import STREAM_ID, TYPE_NAME, JobState
from streamjobs.counts import known_types, server_ms, types_stats
from streamjobs.errors import (
    DecodeError,
    EventsOff,
    InvalidArgument,
    JobNotFound,
    PayloadTooLarge,
    WrongState,
)
from streamjobs.events import Events, events_on
from streamjobs.history import KEEP_MINUTES, throughput
from streamjobs.job import check_job_id
from streamjobs.keys import check_type_name, ready_probe_key
from streamjobs.listing import LISTABLE, MAX_PAGE, list_type_jobs
from streamjobs.presence import live_workers
from streamjobs.producer import CancelOutcome, JobSpec
from streamjobs.results import wait_status
from streamjobs.schedules import Schedule
from streamjobs.scripts import SPECS, EnqueueResult, source
from streamjobs.status import JobStatus, type_status
from streamjobs.typeinfo import describe_type


class ApiRoute(APIRoute):
    """Reads JSON bodies strictly (models.loads_strict) and answers every exception of
    the route through errors.respond, so none reaches the server as a crash."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered(request: Request) -> Response:
            try:
                return await handler(StrictJsonRequest(request.scope, request.receive))
            except (HTTPException, RequestValidationError):
                raise  # FastAPI's own, answered by errors.install's handlers
            except Exception as exc:
                return await respond(request, exc)

        return answered


router = APIRouter(route_class=ApiRoute)
#: Longest long poll of GET /jobs/{type}/{id}?wait=.
MAX_WAIT_S = 60.0
#: Lifetime of the key /ready writes.
READY_PROBE_MS = 5000


@contextmanager
def _refusals(job_id: str, *, missing: str,
              wrong_state: Callable[[WrongState], str]) -> Iterator[None]:
    """A refused transition as 404 / 409, with a message saying what to do next."""
    try:
        yield
    except JobNotFound as e:
        raise ApiError(404, missing, id=job_id) from e
    except WrongState as e:
        raise ApiError(409, wrong_state(e), id=job_id) from e


async def enqueue_jobs(api: ApiState, type_: str, specs: list[JobSpec]) -> list[EnqueueResult]:
    """Enqueue the request's jobs: a payload the wire format cannot carry (say, an integer
    over 64 bits) is the caller's to fix, whereas a DecodeError elsewhere is server data."""
    try:
        return await api.enqueue(type_, specs)
    except PayloadTooLarge:
        raise
    except DecodeError as e:
        raise ApiError(422, f"payload: {e}") from e


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a thread pool, a
# thread hop per dependency per request (12 % of an enqueue request's CPU, py-spy).


async def _api(request: Request) -> ApiState:
    state: ApiState = request.app.state.sj
    return state


async def _type(
    type_: Annotated[str, Path(alias="type", description="job type, e.g. email",
                               json_schema_extra={"pattern": TYPE_PATTERN})],
) -> str:
    return check_type_name(type_)


async def _job_id(
    job_id: Annotated[str, Path(alias="id", description="job id (URL-encoded)",
                                json_schema_extra={"pattern": JOB_ID_PATTERN})],
) -> str:
    return check_job_id(job_id)


Api = Annotated[ApiState, Depends(_api)]
TypeName = Annotated[str, Depends(_type)]
JobId = Annotated[str, Depends(_job_id)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="jobs per page")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody} for c in (422, *codes)}


# ---- jobs -----------------------------------------------------------------------------


@router.post("/jobs/{type}", status_code=201, response_model=Enqueued, tags=["jobs"],
             responses=_errors(409, 413, 503))
async def enqueue(type_: TypeName, body: EnqueueRequest, api: Api,
                  response: Response) -> Enqueued:
    """Enqueue one job. An existing `id` is refused with 409 and that job's id and state.
    A job of the same `dedup_key` that answers for this one is returned with 200 and
    `deduplicated: true` (nothing new enqueued)."""
    (res,) = await enqueue_jobs(api, type_, [body.spec()])
    if res.code is Code.DUPLICATE:
        raise ApiError(409, f"job {res.job_id!r} already exists ({res.state}): enqueue under "
                            f"another id, or read it at GET /jobs/{type_}/{res.job_id}",
                       id=res.job_id, state=res.state)
    if res.code is Code.DEDUPLICATED:
        response.status_code = 200
        return Enqueued(id=res.job_id, state=res.state, deduplicated=True)
    return Enqueued(id=res.job_id, state=res.state)


@router.post("/jobs/{type}/bulk", status_code=201, response_model=BulkEnqueued,
             tags=["jobs"], responses=_errors(413, 503))
async def enqueue_bulk(type_: TypeName, body: BulkRequest, api: Api) -> BulkEnqueued:
    """Enqueue many jobs in one request (pipelined). Results are in request order; a job
    whose id already exists is left as is and flagged `duplicate`."""
    results = await enqueue_jobs(api, type_, [j.spec() for j in body.jobs])
    return BulkEnqueued(jobs=[
        BulkItem(id=r.job_id, state=r.state, duplicate=r.code is Code.DUPLICATE,
                 deduplicated=r.code is Code.DEDUPLICATED)
        for r in results
    ])


@router.post("/workflows", status_code=201, response_model=WorkflowOut, tags=["jobs"],
             responses=_errors(503))
async def enqueue_workflow(body: WorkflowRequest, api: Api) -> WorkflowOut:
    """Enqueue a workflow: each step a job, blocked until the steps it runs `after` have
    ended (then it runs with their results). Checked whole first (names, cycles); steps
    are enqueued parents first."""
    steps = [s.step() for s in body.steps]
    ids = await api.producer.workflow(steps)
    types = {str(s.name): s.type for s in steps}
    return WorkflowOut(jobs={name: WorkflowJob(type=types[name], id=str(job), state=job.state)
                             for name, job in ids.items()})


@router.get("/jobs/{type}", response_model=JobPage, tags=["jobs"], responses=_errors(503))
async def list_by_state(
    type_: TypeName, api: Api,
    state: Annotated[str, Query(pattern=f"^({'|'.join(LISTABLE)})$",
                                description="which jobs to list")] = JobState.WAITING,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(
        max_length=300, json_schema_extra={"pattern": LIST_CURSOR_PATTERN},
        description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """One page of the type's jobs in `state`, oldest first (delayed: soonest due first).
    Rows are summaries; GET the job for its payload and result."""
    since = int(time.time() * 1000) - api.settings.result_ttl * 1000
    page = await list_type_jobs(api.redis, api.producer.keys(type_), JobState(state),
                           cursor=cursor, limit=limit, since_ms=since)
    return {"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor}


@router.get("/jobs/{type}/{id:path}", response_model=JobStatus, tags=["jobs"],
            responses=_errors(404, 409, 503))
async def get_job(
    type_: TypeName, job_id: JobId, api: Api,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
        "seconds to wait for the job to end (completed, dead, cancelled or expired): a long poll "
        "that answers as soon as it ends, else with its state then (it needs the type's "
        "events: 409 when they are switched off)"))] = 0,
) -> dict[str, Any]:
    """A job's state, attempts, timestamps, last error, payload, and result if kept."""
    tk = api.producer.keys(type_)
    if wait > 0:
        status, _ = await wait_status(api.redis, tk, job_id, wait)
    else:
        status = await type_status(api.redis, tk, job_id)
    if status is None:
        raise ApiError(404, f"no job {job_id!r} of type {type_!r} (never enqueued, or its "
                            "record expired after result_ttl)", id=job_id)
    return status.to_dict()


@router.delete("/jobs/{type}/{id:path}", response_model=Cancelled, tags=["jobs"],
               responses=_errors(404, 409, 503))
async def cancel(type_: TypeName, job_id: JobId, api: Api) -> Cancelled:
    """Cancel a job. Waiting or delayed: cancelled at once. Running: the worker holding it
    stops the attempt within about a second (an async handler is cancelled, a handler in
    a process killed) and the job ends cancelled, never retried; a sync handler in a thread
    cannot be stopped (`outcome: uninterruptible`). A finished job answers 409."""
    with _refusals(job_id, missing=f"no job {job_id!r} of type {type_!r}",
                   wrong_state=lambda e: f"{e}: only waiting, delayed or running jobs can be "
                                         "cancelled"):
        answer = await api.producer.cancel(type_, job_id)
    state: str = JobState.CANCELLED
    if answer.outcome is not CancelOutcome.CANCELLED:
        status = await api.producer.status(type_, job_id)
        state = status.state if status is not None else JobState.RUNNING
    return Cancelled(id=job_id, state=state, previous_state=answer, outcome=answer.outcome)


@router.get("/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `ready`, then one per "
                                            "transition"},
                       **_errors(409, 503)})
async def events(
    api: Api,
    types: Annotated[str, Query(max_length=4000, description=(
        "comma-separated job types whose events to follow"))],
    since: Annotated[str, Query(pattern=f"^({STREAM_ID.pattern}|0|\\$)$", description=(
        "'$' (default): events from now on; '0': every event the streams still hold"))] = "$",
) -> StreamingResponse:
    """The types' transitions as Server-Sent Events. The first message is `event: ready`
    (`data:` `{"types": [...]}`), sent once the stream's start is fixed: every transition
    after it is sent. Then one message per transition: `event:` is the transition
    (enqueued, started, progress, completed, failed, retrying, dead, cancelled, expired,
    debounced, dead_retried), `data:` a JSON object (type, id, attempt, at, stream_id, the
    event's own fields, and `partition` on a partitioned type's partitions 1 and up),
    `id:` `tag/stream_id` (the tag: the type, or `type#partition`). A type whose events are
    switched off is refused with 409 before the stream starts (`type` names the first,
    `types` every one)."""
    names = [check_type_name(t) for t in types.split(",") if t]
    if not names:
        raise ApiError(422, "types: name at least one job type")
    watch = Events(api.redis, settings=api.settings)
    try:
        positions = await watch.start(names, since=since)
    except EventsOff as e:  # 409 before anything is streamed: an EventSource stops there
        off = [t for t in names if not await events_on(api.redis, api.producer.keys(t))]
        raise ApiError(409, str(e), type=e.type, types=off or [e.type]) from e

    async def stream() -> AsyncIterator[bytes]:
        yield b"event: ready\ndata: " + orjson.dumps({"types": names}) + b"\n\n"
        async for e in watch.follow(positions):
            yield (f"id: {e.tag}/{e.stream_id}\nevent: {e.event}\n".encode()
                   + b"data: " + orjson.dumps(e.to_dict()) + b"\n\n")

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


# ---- dead letters ---------------------------------------------------------------------


@router.get("/dead/{type}", response_model=DeadPage, tags=["dead letters"],
            responses=_errors(503))
async def dead_list(
    type_: TypeName, api: Api, limit: Limit = 50,
    cursor: Annotated[str | None, Query(json_schema_extra={"pattern": STREAM_ID_PATTERN},
                                        description="next_cursor of the previous page")] = None,
    error_contains: Annotated[str | None, Query(
        max_length=1000, description="only jobs whose error contains this text (a page "
                                     "reads at most 5,000 entries: it may come back short, "
                                     "with a cursor to go on)")] = None,
) -> dict[str, Any]:
    """Dead jobs of the type, oldest first, with reason, error and payload."""
    if error_contains:
        jobs, nxt = await api.dead.find(type_, error_contains=error_contains, after=cursor,
                                        count=limit)
    else:
        jobs, nxt = await api.dead.list(type_, after=cursor, count=limit)
    return {"jobs": [j.to_dict() for j in jobs], "next_cursor": nxt}


@router.post("/dead/{type}/retry", response_model=Count, tags=["dead letters"],
             responses=_errors(503))
async def dead_retry_all(
    type_: TypeName, api: Api,
    error_contains: Annotated[str | None, Query(max_length=1000)] = None,
) -> Count:
    """Retry every dead job of the type, or those whose error contains the text."""
    return Count(count=await api.dead.retry_all(type_, error_contains=error_contains))


@router.delete("/dead/{type}", response_model=Count, tags=["dead letters"],
               responses=_errors(400, 503))
async def dead_purge(
    type_: TypeName, api: Api,
    confirm: Annotated[str | None, Query(
        max_length=10, json_schema_extra={"enum": ["true"]},
        description="must be the text `true`: this cannot be undone")] = None,
    error_contains: Annotated[str | None, Query(max_length=1000)] = None,
) -> Count:
    """Delete the type's dead jobs (or those whose error contains the text). Needs
    `?confirm=true` (that text only): this cannot be undone."""
    if confirm != "true":
        raise ApiError(400, f"purging deletes dead jobs of {type_!r} for good: repeat the "
                            f"request with ?confirm=true (got {confirm!r})")
    return Count(count=await api.dead.purge(type_, error_contains=error_contains))


@router.get("/dead/{type}/{id:path}", response_model=JobStatus, tags=["dead letters"],
            responses=_errors(404, 503))
async def dead_show(type_: TypeName, job_id: JobId, api: Api) -> dict[str, Any]:
    """One dead job with its error and traceback."""
    status = await api.dead.show(type_, job_id)
    if status is None:
        raise ApiError(404, f"no dead job {job_id!r} of type {type_!r}; list them at "
                            f"GET /dead/{type_}", id=job_id)
    return status.to_dict()


@router.post("/dead/{type}/{id:path}/retry", response_model=Retried, tags=["dead letters"],
             responses=_errors(404, 409, 503))
async def dead_retry(type_: TypeName, job_id: JobId, api: Api) -> Retried:
    """Move one dead job back to the stream with a fresh set of attempts."""
    with _refusals(job_id, missing=f"no dead job {job_id!r} of type {type_!r}",
                   wrong_state=lambda e: f"job {job_id!r} is not dead, so there is nothing "
                                         "to retry"):
        await api.dead.retry(type_, job_id)
    return Retried(id=job_id)


@router.delete("/dead/{type}/{id:path}", response_model=Retried, tags=["dead letters"],
               responses=_errors(404, 409, 503))
async def dead_purge_one(type_: TypeName, job_id: JobId, api: Api) -> Retried:
    """Delete one dead job."""
    with _refusals(job_id, missing=f"no dead job {job_id!r} of type {type_!r}",
                   wrong_state=lambda e: f"job {job_id!r} is not dead: only dead jobs are "
                                         "purged"):
        await api.dead.purge_one(type_, job_id)
    return Retried(id=job_id, state="purged")


# ---- operations -----------------------------------------------------------------------


@router.get("/types", response_model=TypesOut, tags=["operations"], responses=_errors(503))
async def types(api: Api) -> dict[str, Any]:
    """Every known type with waiting, running, delayed, dead, completed counts and the
    age in seconds of its oldest waiting job."""
    names = await known_types(api.redis, api.settings.prefix)
    stats = await types_stats(api.redis, [api.producer.keys(t) for t in names])
    return {"types": [s.to_dict() for s in stats]}


@router.post("/types/{type}/pause", response_model=TypePaused, tags=["operations"],
             responses=_errors(503))
async def pause_type(type_: TypeName, api: Api) -> TypePaused:
    """Pause a type: workers start none of its jobs within about a second; enqueues still
    land and running jobs finish. The state is on the server (survives worker restarts)."""
    return TypePaused(type=type_, paused=True, changed=await api.producer.pause(type_))


@router.post("/types/{type}/resume", response_model=TypePaused, tags=["operations"],
             responses=_errors(503))
async def resume_type(type_: TypeName, api: Api) -> TypePaused:
    """Resume a paused type."""
    return TypePaused(type=type_, paused=False, changed=await api.producer.resume(type_))


# ---- webhooks -------------------------------------------------------------------------


def _name_in_path(what: str, description: str) -> Any:
    """A path parameter ``name`` of a webhook or a schedule: a type name's characters."""

    def checked(
        name: Annotated[str, Path(description=description,
                                  json_schema_extra={"pattern": TYPE_PATTERN})],
    ) -> str:
        if not TYPE_NAME.fullmatch(name):
            raise ApiError(422, f"invalid {what} name {name!r}: use 1-64 characters from "
                                "A-Z a-z 0-9 _ . -")
        return name

    return Depends(checked)


HookName = Annotated[str, _name_in_path("webhook", "webhook name (default: default)")]


@router.get("/webhooks", response_model=WebhooksOut, tags=["webhooks"],
            responses=_errors(503))
async def list_webhooks(api: Api) -> dict[str, Any]:
    """Every webhook of every known type (never their secrets)."""
    return {"webhooks": [h.public() for h in await api.producer.webhooks()]}


@router.get("/webhooks/{type}", response_model=WebhooksOut, tags=["webhooks"],
            responses=_errors(503))
async def type_webhooks(type_: TypeName, api: Api) -> dict[str, Any]:
    """The webhooks of one type."""
    return {"webhooks": [h.public() for h in await api.producer.webhooks(type_)]}


@router.put("/webhooks/{type}/{name}", response_model=WebhookOut, tags=["webhooks"],
            responses=_errors(503))
async def put_webhook(type_: TypeName, name: HookName, body: WebhookRequest,
                      api: Api) -> dict[str, Any]:
    """Create or replace a webhook: ``url`` is POSTed (JSON, signed with ``secret``) each
    time a job of the type completes or ends dead, as ``events`` chooses. Workers of the
    type see it within a second; workers with webhooks on deliver it."""
    try:
        hook = await api.producer.set_webhook(type_, body.url, name=name,
                                              events=list(body.events), secret=body.secret)
    except InvalidArgument as e:
        raise ApiError(422, str(e)) from e
    return hook.public()


@router.delete("/webhooks/{type}/{name}", response_model=Status, tags=["webhooks"],
               responses=_errors(404, 503))
async def delete_webhook(type_: TypeName, name: HookName, api: Api) -> Status:
    """Delete a webhook (deliveries already enqueued for it are dropped)."""
    if not await api.producer.remove_webhook(type_, name):
        raise ApiError(404, f"no webhook {name!r} of {type_}", name=name)
    return Status(status="deleted")


# ---- schedules ------------------------------------------------------------------------


ScheduleName = Annotated[str, _name_in_path("schedule", "schedule name")]


def _found(s: Any, name: str) -> Any:
    if s is None or s is False:
        raise ApiError(404, f"no schedule {name!r}", name=name)
    return s


@router.get("/schedules", response_model=SchedulesOut, tags=["schedules"],
            responses=_errors(503))
async def list_schedules(api: Api) -> dict[str, Any]:
    """Every schedule of every known type, by name."""
    return {"schedules": [s.to_dict() for s in await api.producer.schedules()]}


@router.get("/schedules/{name}", response_model=Schedule, tags=["schedules"],
            responses=_errors(404, 503))
async def get_schedule(name: ScheduleName, api: Api) -> dict[str, Any]:
    """One schedule with its last and next run (server ms; next is null while paused)."""
    return dict(_found(await api.producer.get_schedule(name), name).to_dict())


@router.put("/schedules/{name}", response_model=Schedule, tags=["schedules"],
            responses=_errors(503))
async def put_schedule(name: ScheduleName, body: ScheduleRequest, api: Api) -> dict[str, Any]:
    """Create or replace a schedule. Workers of its type pick it up within a second; an
    unchanged definition keeps its next run."""
    s = await schedules.upsert(api.redis, api.settings.prefix, body.schedule(name))
    return s.to_dict()


@router.delete("/schedules/{name}", response_model=Status, tags=["schedules"],
               responses=_errors(404, 503))
async def delete_schedule(name: ScheduleName, api: Api) -> Status:
    """Delete a schedule (the jobs it enqueued stay)."""
    _found(await api.producer.unschedule(name), name)
    return Status(status="deleted")


@router.post("/schedules/{name}/pause", response_model=Schedule, tags=["schedules"],
             responses=_errors(404, 503))
async def pause_schedule(name: ScheduleName, api: Api) -> dict[str, Any]:
    """Stop a schedule's ticks."""
    return dict(_found(await api.producer.pause_schedule(name), name).to_dict())


@router.post("/schedules/{name}/resume", response_model=Schedule, tags=["schedules"],
             responses=_errors(404, 503))
async def resume_schedule(name: ScheduleName, api: Api) -> dict[str, Any]:
    """Resume a schedule: its next run is its first tick after now."""
    return dict(_found(await api.producer.resume_schedule(name), name).to_dict())


@router.post("/schedules/{name}/run-now", response_model=RanNow, status_code=201,
             tags=["schedules"], responses=_errors(404, 503))
async def run_schedule_now(name: ScheduleName, api: Api) -> RanNow:
    """Enqueue the schedule's job once now; its ticks go on."""
    return RanNow(id=_found(await api.producer.run_schedule_now(name), name))


@router.get("/types/{type}", response_model=TypeDetail, tags=["operations"],
            responses=_errors(503))
async def type_detail(type_: TypeName, api: Api) -> dict[str, Any]:
    """One type's counts, its policy (limits included) as its live workers run it, and
    what its limits hold now (slots taken, jobs parked, starts in the rate window)."""
    return await describe_type(api.redis, api.producer.keys(type_))


@router.get("/throughput", response_model=ThroughputOut, tags=["operations"],
            responses=_errors(503))
async def throughput_per_minute(
    api: Api,
    minutes: Annotated[int, Query(ge=1, le=KEEP_MINUTES,
                                  description="how many minutes, the current one last")] = 60,
) -> dict[str, Any]:
    """Jobs completed and attempts failed per minute, per type (the dashboard's chart).
    The API samples the counters every 15 s; minutes it did not run share the
    difference evenly."""
    names = await known_types(api.redis, api.settings.prefix)
    now = server_ms(await api.redis.time())
    start, series = await throughput(api.redis, [api.producer.keys(t) for t in names], now,
                                     minutes)
    return {"start": start, "types": [s.to_dict() for s in series]}


@router.get("/workers", response_model=WorkersOut, tags=["operations"],
            responses=_errors(503))
async def workers(api: Api) -> dict[str, Any]:
    """Workers whose heartbeat is recent."""
    return {"workers": await live_workers(api.redis, api.settings.prefix)}


@router.get("/health", response_model=Status, tags=["operations"])
async def health() -> Status:
    """The process is alive (no server call)."""
    return Status(status="ok")


@router.get("/ready", response_model=Status, tags=["operations"],
            responses={503: {"model": ErrorBody}})
async def ready(api: Api) -> Any:
    """The server answers, takes writes, and every transition script is loaded (loading
    missing ones)."""
    names = list(SPECS)
    shas = [hashlib.sha1(source(n).encode()).hexdigest() for n in names]
    try:
        with anyio.fail_after(3):
            # A write, as enqueues are: a full or read-only server answers but refuses them.
            await api.redis.set(ready_probe_key(api.settings.prefix), b"1", px=READY_PROBE_MS)
            present = await api.redis.script_exists(*shas)
            for name, ok in zip(names, present, strict=True):
                if not ok:
                    await api.redis.script_load(source(name))
    except ResponseError as e:
        return error_response(503, f"not ready: the job server refuses writes ({e})",
                              headers={"Retry-After": "1"})
    except (RedisError, OSError, TimeoutError) as e:
        return error_response(503, f"not ready: the job server does not answer ({e or 'timeout'})",
                              headers={"Retry-After": "1"})
    return Status(status="ready")


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition"}})
async def metrics(api: Api) -> Response:
    """Queue figures read from the server now, and the API's own metrics."""
    data = await anyio.to_thread.run_sync(generate_latest, api.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
