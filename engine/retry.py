"""Per-type policy: attempts, retry tiers, timeouts, visibility.

The backoff itself is computed inside ``lua/fail.lua`` (from the job's attempt count,
atomically with the transition); the worker only hands it a random number for jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamjobs.errors import ConfigError

ISOLATIONS = ("thread", "process")


@dataclass(frozen=True, slots=True)
class Policy:
    #: Attempts in all (the first run included) before the job goes dead.
    max_attempts: int = 3
    #: Failed attempts retried at once, before backoff starts.
    immediate_retries: int = 1
    #: First backoff delay, seconds; doubles per further failure.
    backoff_base: float = 1.0
    #: Longest backoff delay, seconds.
    backoff_cap: float = 3600.0
    #: Fraction of each delay taken off at random (0: none, 1: full jitter).
    jitter: float = 0.5
    #: Seconds one attempt may run before it fails as a timeout.
    timeout: float = 300.0
    #: Seconds an entry may sit unacknowledged before another worker reclaims it.
    #: Running jobs are touched every third of it, so it bounds crash detection only.
    visibility_timeout: float = 30.0
    #: Deliveries (worker deaths included) before the entry is dead-lettered as poison.
    max_deliveries: int = 3
    #: Where a sync (``def``) handler runs: ``"thread"``, or ``"process"`` (a child
    #: process, killed when its attempt times out, is cancelled or the worker stops).
    isolation: str = "thread"
    #: With ``isolation="process"``: attempts a child runs before it is replaced (0: any).
    max_tasks_per_child: int = 0
    #: With ``isolation="process"``: a child whose peak RSS went over this many MB is
    #: replaced after its attempt (0: no limit).
    max_child_memory_mb: int = 0
    #: Concurrency limits, on the server across all workers (0: none): jobs of the type
    #: running at once (per hash tag: each partition of a partitioned type has its own),
    #: and per ``limit_key`` (a key's jobs live in one partition). A job over a limit
    #: waits, parked, and starts when a slot frees (lua/includes/slots.lua).
    max_running: int = 0
    max_running_per_key: int = 0
    #: Rate limits, on the server across all workers (None: none): ``"N/s"``, ``"N/m"``
    #: or ``"N/h"`` starts of the type (per hash tag), and per ``limit_key``, in any
    #: window of that length (a sliding window). A job over it waits, no attempt spent.
    rate_limit: str | None = None
    rate_limit_per_key: str | None = None

    def __post_init__(self) -> None:
        for rate in (self.rate_limit, self.rate_limit_per_key):
            if rate is not None:
                parse_rate(rate)
        checks = [
            (self.max_attempts >= 1, "max_attempts must be >= 1"),
            (self.immediate_retries >= 0, "immediate_retries must be >= 0"),
            (self.backoff_base >= 0, "backoff_base must be >= 0"),
            (self.backoff_cap >= self.backoff_base, "backoff_cap must be >= backoff_base"),
            (0 <= self.jitter <= 1, "jitter must be within [0, 1]"),
            (self.timeout > 0, "timeout must be > 0"),
            (self.visibility_timeout >= 0.1, "visibility_timeout must be >= 0.1 s"),
            (self.max_deliveries >= 1, "max_deliveries must be >= 1"),
            (self.isolation in ISOLATIONS, f"isolation must be one of {ISOLATIONS}"),
            (self.max_tasks_per_child >= 0, "max_tasks_per_child must be >= 0"),
            (self.max_child_memory_mb >= 0, "max_child_memory_mb must be >= 0"),
            (self.max_running >= 0, "max_running must be >= 0"),
            (self.max_running_per_key >= 0, "max_running_per_key must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


_PERIODS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}


def parse_rate(text: str) -> tuple[int, int]:
    """``"N/s"`` (or ``/m``, ``/h``) as (N, period in ms); ConfigError when malformed."""
    count, _, unit = str(text).partition("/")
    if not count.isdigit() or int(count) < 1 or unit not in _PERIODS_MS:
        raise ConfigError(f"rate {text!r}: use N/s, N/m or N/h with a whole N >= 1")
    return int(count), _PERIODS_MS[unit]
