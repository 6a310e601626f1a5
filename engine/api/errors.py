"""Every error the API answers is JSON ``{"error": "<what to do>"}``: the one mapping.

Engine exceptions, redis errors, request validation and HTTP errors are turned into a
status and a message here, so no route decides a status code for an engine error and
bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

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


#: Engine exceptions → status, most specific first. ValueError is the engine's
#: "bad argument" (job id, cursor, limit, reserved header ...).
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.InvalidTypeName, 422),
    (errors.PayloadTooLarge, 413),
    (errors.DecodeError, 422),
    (errors.JobNotFound, 404),
    (errors.DuplicateJob, 409),
    (errors.WrongState, 409),
    (errors.NotOwner, 409),
    (errors.ServerError, 503),
    (ValueError, 422),
)

#: Server replies that mean "try again later", not a bug.
_UNAVAILABLE = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def status_for(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, **exc.extra)


async def _engine_error(_: Request, exc: Exception) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.TransitionError) and exc.job_id:
        extra["id"] = exc.job_id
    return error_response(status_for(exc), str(exc), **extra)


async def _redis_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return error_response(503, f"the job server cannot be reached, try again: {exc}",
                              headers={"Retry-After": "1"})
    if isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE):
        return error_response(503, f"the job server refused the request, try again: {exc}",
                              headers={"Retry-After": "1"})
    log.error("server error: %r", exc)
    return error_response(500, f"the job server answered an error: {exc}")


def _validation_message(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                "type": str(e.get("type", ""))} for e in exc.errors()]
    message = "; ".join(_validation_message(e) for e in details[:5]) or "invalid request"
    return error_response(422, message, detail=details)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route: see /docs for the routes this API serves"
    elif exc.status_code == 405:
        message = "method not allowed on this route: see /docs"
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error (logged by the API process)")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(errors.StreamJobsError, _engine_error)
    app.add_exception_handler(ValueError, _engine_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
