"""Sync handlers for tests of isolation="process": module-level, so a child process can
import them by name. Payloads carry what they need (the server URL, key names)."""

from __future__ import annotations

import os
import time
from typing import Any

from redis import Redis

from streamjobs import Job


def sleep_then_mark(job: Job) -> None:
    """Records its pid, sleeps, then sets a key: the side effect a killed child never makes."""
    with Redis.from_url(job.payload["url"]) as r:
        r.set(job.payload["pid_key"], os.getpid())
        time.sleep(job.payload["sleep"])
        r.set(job.payload["done_key"], 1)


def pid(job: Job) -> int:
    return os.getpid()


def crash_first(job: Job) -> int:
    """The first attempt kills its own process; the retry returns its pid."""
    if job.attempt == 1:
        os._exit(3)
    return os.getpid()


def hog(job: Job) -> int:
    """Touches ``mb`` MB of memory, then returns its pid."""
    block = bytearray(job.payload.get("mb", 0) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return os.getpid()


def fail_permanently(job: Job) -> Any:
    from streamjobs import PermanentError

    raise PermanentError("no way")
