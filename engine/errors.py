"""Every exception streamjobs raises derives from :class:`StreamJobsError`.

::

    StreamJobsError
    ├── ConfigError            bad settings or environment
    │   └── EventsOff          a type's events are switched off, and the call needs them
    ├── InvalidArgument        a caller's bad argument (also a ValueError)
    │   └── InvalidTypeName    a job type outside [A-Za-z0-9_.-]{1,64}
    ├── DecodeError            a stream entry that breaks the wire format (also a ValueError)
    │   └── PayloadTooLarge    a payload over max_payload_bytes
    ├── CorruptData            data on the server the engine cannot read (a record written
    │   │                      by another version or by hand): a server-side problem
    │   └── ReplyShapeError    a script's reply is not the shape its header declares
    ├── ServerError            the server could not be reached or started
    │   ├── ServerUnavailable  still unreachable (or failing over) at the retry deadline
    │   └── NotDurable         written, but the durability asked for was not confirmed
    ├── TransitionError        a script refused a transition (carries its Code)
    │   ├── JobNotFound
    │   ├── DuplicateJob
    │   ├── WrongState
    │   └── NotOwner
    └── HandlerSignal          raised by handlers to steer the retry policy
        ├── PermanentError     straight to the dead stream, no more attempts
        └── RetryAfter         retry after the given number of seconds
"""

from __future__ import annotations

from streamjobs.codes import Code


class StreamJobsError(Exception):
    """Root of every error raised by streamjobs."""


class ConfigError(StreamJobsError):
    """The settings or the environment are not valid."""


class EventsOff(ConfigError):
    """A type's events are switched off (``streamjobs events TYPE off``), and the call
    needs them: ``result()``, ``watch()``, ``GET /events``, a long poll."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"events are switched off for type {type_!r}: results and watching "
                         f"need them; switch them on with `streamjobs events {type_} on`")
        self.type = type_


class InvalidArgument(StreamJobsError, ValueError):
    """A caller passed an argument the engine cannot use (bad id, cursor, limit, ...)."""


class InvalidTypeName(InvalidArgument):
    """A job type name does not match ``[A-Za-z0-9_.-]{1,64}``."""


class DecodeError(StreamJobsError, ValueError):
    """A stream entry or a payload that breaks the wire format."""


class PayloadTooLarge(DecodeError):
    """A payload larger than the configured ``max_payload_bytes``."""


class CorruptData(StreamJobsError):
    """The server holds data the engine cannot read: a server-side problem, not the caller's."""


class ReplyShapeError(CorruptData):
    """A script's reply does not have the shape its header declares (a script of
    another version answered)."""


class ServerError(StreamJobsError):
    """The Redis/Valkey server could not be reached or started."""


class ServerUnavailable(ServerError):
    """The server stayed unreachable, or a failover did not end, within the retry deadline
    (``Settings.enqueue_deadline``); ``__cause__`` is the last error seen."""


class NotDurable(ServerError):
    """The jobs were written, but the server could not confirm the durability asked for
    (AOF off, no replica in time, or a server without WAITAOF). ``job_ids`` are the jobs
    written: they will run, but a crash now could lose them."""

    def __init__(self, message: str, job_ids: list[str]) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class TransitionError(StreamJobsError):
    """A Lua transition refused to run: the job was not in the expected state."""

    def __init__(self, code: Code, job_id: str | None = None, detail: str = "") -> None:
        self.code = code
        self.job_id = job_id
        msg = f"{code.name.lower().replace('_', ' ')}"
        if job_id:
            msg += f": job {job_id}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class JobNotFound(TransitionError):
    """No job with that id exists (or its record has expired)."""


class DuplicateJob(TransitionError):
    """A job with that id already exists."""


class WrongState(TransitionError):
    """The job exists but is not in a state this transition accepts."""


class NotOwner(TransitionError):
    """The calling worker no longer owns the entry (it was reclaimed)."""


class JobFailed(StreamJobsError):
    """The job awaited ended dead: ``reason`` (a ``contract.Failure`` text) and ``error``
    say why."""

    def __init__(self, job_id: str, reason: str | None, error: str | None) -> None:
        super().__init__(f"job {job_id} is dead ({reason}): {error}")
        self.job_id, self.reason, self.error = job_id, reason, error


class JobCancelled(StreamJobsError):
    """The job awaited was cancelled (before it ran, while it ran, or deduplicated at its
    start: ``reason`` says which when known)."""

    def __init__(self, job_id: str, reason: str | None = None) -> None:
        super().__init__(f"job {job_id} was cancelled" + (f" ({reason})" if reason else ""))
        self.job_id, self.reason = job_id, reason


class JobExpired(StreamJobsError):
    """The job awaited was not started by its ``expires_at``: it never ran."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} expired before it started")
        self.job_id = job_id


class ResultTimeout(StreamJobsError, TimeoutError):
    """The job awaited did not finish within the timeout (it may still)."""


class HandlerSignal(StreamJobsError):
    """Base of the exceptions a handler raises to steer the retry policy."""


class PermanentError(HandlerSignal):
    """The job can never succeed: dead-letter it now without further attempts."""


class RateLimited(HandlerSignal):
    """The service the handler calls is over its rate (an HTTP 429, say): hold back the
    handler's type (``per_key``: the job's key) for ``seconds``. The job runs again
    after that, no attempt spent; so do the type's (or key's) other jobs, on every
    worker. Needs the type's ``rate_limit`` (``per_key``: ``rate_limit_per_key``); on a
    type without one it acts as :class:`RetryAfter` (an attempt spent)."""

    def __init__(self, seconds: float, message: str = "", *, per_key: bool = False) -> None:
        if seconds < 0:
            raise InvalidArgument("RateLimited seconds must be >= 0")
        self.seconds = float(seconds)
        self.per_key = per_key
        super().__init__(message or f"rate limited for {seconds:g}s")


class RetryAfter(HandlerSignal):
    """Retry the job after ``seconds`` (counts as an attempt)."""

    def __init__(self, seconds: float, message: str = "") -> None:
        if seconds < 0:
            raise InvalidArgument("RetryAfter seconds must be >= 0")
        self.seconds = float(seconds)
        super().__init__(message or f"retry after {seconds:g}s")


_EXCEPTIONS: dict[Code, type[TransitionError]] = {
    Code.NOT_FOUND: JobNotFound,
    Code.DUPLICATE: DuplicateJob,
    Code.WRONG_STATE: WrongState,
    Code.NOT_OWNER: NotOwner,
}


def raise_for_code(code: int, job_id: str | None = None, detail: str = "") -> None:
    """Raise the exception for a non-OK script code; return on ``OK``. The one mapping of
    Lua return codes to exceptions."""
    c = Code(code)
    if c is Code.OK:
        return
    raise _EXCEPTIONS[c](c, job_id, detail)
