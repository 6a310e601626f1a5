"""Log set-up for the command line: levels, text or JSON lines, credentials redacted.

Per-job lines go to the logger ``streamjobs.jobs``: started (DEBUG), completed (INFO),
failed (WARNING), dead (ERROR), each with ``job_type``, ``job_id``, ``attempt`` and,
once the handler returned, ``duration_ms`` as record attributes (keys in JSON).
By default that logger shows failures only; ``-v`` adds completed jobs, ``-vv`` adds
started jobs and every other DEBUG line.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from streamjobs.errors import InvalidArgument

#: The logger of per-job lines.
JOBS = "streamjobs.jobs"
FORMATS = ("text", "json")
#: Record attributes a per-job line carries (JSON keys; appended to text lines).
JOB_FIELDS = ("job_type", "job_id", "attempt", "duration_ms")

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<auth>[^/@\s]+)@")
#: ``?password=...`` / ``&sentinel_password=...`` in a server URL's query.
_QUERY_SECRET = re.compile(r"(?P<name>[?&](?:sentinel_)?password=)[^&\s]*")


def redact(text: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (a bare password, and a
    ``password=`` / ``sentinel_password=`` query parameter, too)."""

    def hide(m: re.Match[str]) -> str:
        user, sep, _ = m["auth"].partition(":")
        return f"{m['scheme']}{user}:***@" if sep else f"{m['scheme']}***@"

    return _QUERY_SECRET.sub(r"\g<name>***", _CREDENTIALS.sub(hide, text))


@dataclass(frozen=True, slots=True)
class LogConfig:
    #: 0: INFO, failures of jobs only; 1: completed jobs too; 2: DEBUG everything.
    verbosity: int = 0
    format: str = "text"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidArgument(f"log format must be one of {', '.join(FORMATS)}")

    def argv(self) -> list[str]:
        """The same options for a child ``streamjobs`` process."""
        return ["-v"] * self.verbosity + ["--log-format", self.format]


class RedactFilter(logging.Filter):
    """Hides URL credentials in every formatted message, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in JOB_FIELDS if hasattr(record, k)]
        return f"{line} [{' '.join(extra)}]" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(),
        }
        for k in JOB_FIELDS:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(config: LogConfig) -> None:
    """Configure the root logger for a ``streamjobs`` process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.verbosity >= 2 else logging.INFO)
    jobs_level = (logging.WARNING, logging.INFO)[config.verbosity] if config.verbosity < 2 \
        else logging.DEBUG
    logging.getLogger(JOBS).setLevel(jobs_level)


_jobs = logging.getLogger(JOBS)


def job_started(job_type: str, job_id: str, attempt: int) -> None:
    if _jobs.isEnabledFor(logging.DEBUG):
        _jobs.debug("started %s %s attempt %d", job_type, job_id, attempt,
                    extra={"job_type": job_type, "job_id": job_id, "attempt": attempt})


def job_finished(job_type: str, job_id: str, attempt: int, kind: str, error: str,
                 seconds: float) -> None:
    """One line per finished attempt; ``kind`` is the worker's outcome."""
    level = _OUTCOME_LEVEL.get(kind, logging.WARNING)
    if not _jobs.isEnabledFor(level):
        return
    ms = round(seconds * 1000, 3)
    fields = {"job_type": job_type, "job_id": job_id, "attempt": attempt, "duration_ms": ms}
    if kind == "ok":
        _jobs.log(level, "completed %s %s attempt %d in %.1f ms", job_type, job_id, attempt,
                  ms, extra=fields)
    elif kind == "released":
        _jobs.log(level, "released %s %s attempt %d after %.1f ms (shutdown)", job_type,
                  job_id, attempt, ms, extra=fields)
    elif kind == "stopped":
        _jobs.log(level, "cancelled %s %s attempt %d after %.1f ms (cancel asked)", job_type,
                  job_id, attempt, ms, extra=fields)
    else:
        _jobs.log(level, "failed %s %s attempt %d after %.1f ms (%s): %s", job_type, job_id,
                  attempt, ms, kind, error, extra=fields)


def job_dead(job_type: str, job_id: str, attempts: int, error: str) -> None:
    if _jobs.isEnabledFor(logging.ERROR):
        _jobs.error("dead %s %s after %d attempts: %s", job_type, job_id, attempts, error,
                    extra={"job_type": job_type, "job_id": job_id, "attempt": attempts})


_OUTCOME_LEVEL = {"ok": logging.INFO, "released": logging.DEBUG, "stopped": logging.INFO}
