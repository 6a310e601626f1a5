"""Every error the API answers is JSON ``{"error": "<what to do>"}``: the one mapping.

Engine exceptions, redis errors, request validation and HTTP errors are turned into a
status and a message here, so no route decides a status code for an engine error and
bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions as rx
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from streamjobs import errors

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

log = logging.getLogger("streamjobs.api")


class ApiError(Exception):
    """An error a route answers with ``status``; ``extra`` fields join ``error``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Answer:
    """How the API answers one class of exception."""

    status: int
    #: None: the exception's own text (written for the caller). Otherwise a fixed
    #: message, and the exception is logged: its text is for the operator only.
    message: str | None = None
    #: Seconds for ``Retry-After`` (a refusal that passes).
    retry_after: int | None = None


_BUSY = Answer(503, "the job server refuses requests for now (full, read-only, loading or "
                    "failing over): try again later", retry_after=1)
_UNREACHABLE = Answer(503, "the job server cannot be reached: try again later", retry_after=1)
_UNREADABLE = Answer(500, "the job server holds data this API cannot read (logged by the "
                         "API process)")
_SERVER_FAULT = Answer(500, "the job server answered an error (logged by the API process)")

#: Every exception a route can meet → its answer; the first matching class wins, so
#: subclasses come before their bases. Anything else is a logged 500.
ANSWERS: tuple[tuple[type[Exception], Answer], ...] = (
    # The caller's mistakes: the message says what to change.
    (errors.PayloadTooLarge, Answer(413)),
    (errors.InvalidArgument, Answer(422)),
    (errors.JobNotFound, Answer(404)),
    (errors.DuplicateJob, Answer(409)),
    (errors.WrongState, Answer(409)),
    (errors.NotOwner, Answer(409)),
    (errors.TransitionError, Answer(409)),  # any other refused transition
    # An awaited job's end (no route raises them: ?wait= answers with the status).
    (errors.JobFailed, Answer(409)),
    (errors.JobCancelled, Answer(409)),
    (errors.JobExpired, Answer(409)),
    (errors.ResultTimeout, Answer(504)),
    # Data on the server the engine cannot read: the operator's problem, not the caller's.
    (errors.CorruptData, _UNREADABLE),
    (errors.DecodeError, _UNREADABLE),  # routes turn a caller's payload into a 422 first
    (errors.ServerError, _UNREACHABLE),
    # Events off for the type (a ConfigError of the server's, which the caller can fix).
    (errors.EventsOff, Answer(409)),
    (errors.ConfigError, Answer(500, "the API is misconfigured (logged by the API process)")),
    # Server refusals that pass. redis-py strips the reply's code (OOM, READONLY ...)
    # from the message and names it by class instead.
    (rx.BusyLoadingError, _BUSY),  # a ConnectionError: before it
    (rx.AuthenticationError, _SERVER_FAULT),
    (rx.ConnectionError, _UNREACHABLE),
    (rx.TimeoutError, _UNREACHABLE),
    (rx.OutOfMemoryError, _BUSY),
    (rx.ReadOnlyError, _BUSY),
    (rx.TryAgainError, _BUSY),
    (rx.ClusterDownError, _BUSY),  # and MasterDownError
    (rx.AskError, _BUSY),  # and MovedError: a slot moving between nodes
    (rx.RedisError, _SERVER_FAULT),
)

#: Anything else is a bug.
UNMAPPED = Answer(500, "internal error (logged by the API process)")
#: Reply codes redis-py has no class for (its message keeps them).
_BUSY_CODES = ("BUSY ", "NOREPLICAS ")


def answer_for(exc: BaseException) -> Answer:
    if isinstance(exc, rx.ResponseError) and str(exc).startswith(_BUSY_CODES):
        return _BUSY
    for cls, answer in ANSWERS:
        if isinstance(exc, cls):
            return answer
    return UNMAPPED


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def respond(request: Request, exc: Exception) -> JSONResponse:
    """The answer to any exception a route raised (routes.ApiRoute sends them all here)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, **exc.extra)
    answer = answer_for(exc)
    if answer.message is not None:
        level = logging.WARNING if answer.status < 500 else logging.ERROR
        log.log(level, "%s %s answered %d: %s: %s", request.method, request.url.path,
                answer.status, type(exc).__name__, exc,
                exc_info=exc if answer.status == 500 else None)
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else None
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.TransitionError) and exc.job_id:
        extra["id"] = exc.job_id
    if isinstance(exc, errors.EventsOff):
        extra["type"] = exc.type
    return error_response(answer.status, answer.message or str(exc), headers, **extra)


def _validation_message(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":
        why = (err.get("ctx") or {}).get("error")
        return f"the request body is not valid JSON: {why}" if why else \
            "the request body is not valid JSON"
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = list(exc.errors())
    details = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                "type": str(e.get("type", ""))} for e in errs]
    message = "; ".join(_validation_message(e) for e in errs[:5]) or "invalid request"
    return error_response(422, message, detail=details)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> str:
    """Every method some route of the path takes (Starlette names only the first route's)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(r.matches(scope)[0] is Match.FULL for r in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route: see /docs for the routes this API serves"
    elif exc.status_code == 405:
        message = "method not allowed on this route: see /docs"
        headers["Allow"] = _allowed(request)
    return error_response(exc.status_code, message, headers=headers)




def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    # Routes answer their exceptions through ApiRoute; these catch what is raised
    # outside a route (middleware, mounted apps).
    app.add_exception_handler(ApiError, respond)
    for cls, _ in ANSWERS:
        app.add_exception_handler(cls, respond)
    app.add_exception_handler(Exception, respond)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
