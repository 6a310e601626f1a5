"""What one attempt came to (a :class:`Result`), and how a handler's return value or
exception becomes one. Shared by the worker and its isolation child processes."""

from __future__ import annotations

import traceback as tb_mod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamjobs.contract import Attempt
from streamjobs.errors import DecodeError, PermanentError, RateLimited, RetryAfter
from streamjobs.job import dumps

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamjobs.job import Job


@dataclass(frozen=True, slots=True)
class Result:
    """What an attempt came to, on its way to the settler."""

    kind: Attempt
    result: bytes = b""
    error: str = ""
    traceback: str = ""
    retry_after: float = 0.0
    #: ``RateLimited(per_key=True)``: the job's key is held back, not its type.
    per_key: bool = False


def outcome_of(fn: Callable[[Job], Any], job: Job) -> Result:
    """Run a sync handler and classify what it did (in an isolation child process)."""
    try:
        return ok(fn(job))
    except Exception as e:
        return error_outcome(e)


def ok(result: Any) -> Result:
    if result is None:
        return Result(Attempt.OK)
    try:
        return Result(Attempt.OK, result=dumps(result))
    except DecodeError as e:
        # Running it again would repeat its side effects and return the same value.
        return Result(Attempt.PERMANENT, error=f"the handler returned a value that cannot "
                      f"be stored as the job's result (return JSON values): {e}"[:2000])


def error_outcome(e: Exception) -> Result:
    if isinstance(e, PermanentError):
        return failure(Attempt.PERMANENT, e)
    if isinstance(e, RateLimited):
        return Result(Attempt.RATE_LIMITED, error=f"{type(e).__name__}: {e}"[:2000],
                      retry_after=e.seconds, per_key=e.per_key)
    if isinstance(e, RetryAfter):
        return failure(Attempt.AFTER, e, retry_after=e.seconds)
    return failure(Attempt.RETRY, e)


def failure(kind: Attempt, e: BaseException, retry_after: float = 0.0) -> Result:
    error = f"{type(e).__name__}: {e}"[:2000]
    return Result(kind, error=error, traceback=format_traceback(e)[-8000:],
                   retry_after=retry_after)


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_traceback(e: BaseException) -> str:
    """The traceback as Python prints it, without 3.11's caret lines: those re-parse each
    frame's source with ``ast`` and cost ~100 us per failure on the hot path."""
    parts: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = e
    while exc is not None and id(exc) not in seen and len(seen) < 5:
        seen.add(id(exc))
        lines = ["Traceback (most recent call last):\n"]
        for f in tb_mod.extract_tb(exc.__traceback__):
            lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}\n')
            if f.line:
                lines.append(f"    {f.line.strip()}\n")
        lines += tb_mod.format_exception_only(type(exc), exc)
        parts.insert(0, "".join(lines))
        if exc.__cause__ is not None:
            parts.insert(0, _CAUSE)
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            parts.insert(0, _CONTEXT)
            exc = exc.__context__
        else:
            exc = None
    return "".join(parts)
