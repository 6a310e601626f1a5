"""The one place that names Redis keys.

Every key of a type shares the hash tag ``{type}`` so a transition touches one
cluster slot. Per-job keys are built inside Lua from ``job_prefix``, which is
itself passed in KEYS.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamjobs.contract import TYPE_NAME
from streamjobs.errors import InvalidTypeName

GROUP = "workers"


def check_type_name(name: str) -> str:
    """Return ``name`` if it is a valid job type name, else raise InvalidTypeName."""
    if not isinstance(name, str) or not TYPE_NAME.fullmatch(name):
        raise InvalidTypeName(
            f"invalid job type {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(not '.' or '..')"
        )
    return name


@dataclass(frozen=True, slots=True)
class TypeKeys:
    """All keys of one job type."""

    prefix: str
    type: str

    def __post_init__(self) -> None:
        check_type_name(self.type)

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.type}}}:"

    @property
    def stream(self) -> str:
        return self.base + "stream"

    @property
    def delayed(self) -> str:
        return self.base + "delayed"

    @property
    def dead(self) -> str:
        return self.base + "dead"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def done(self) -> str:
        """Sorted set of completed job ids by finish time (bounded by retention)."""
        return self.base + "done"

    @property
    def events(self) -> str:
        """Stream of the type's transitions (``contract.Event``), capped near
        ``contract.EVENTS_MAXLEN``."""
        return self.base + "events"

    @property
    def job_prefix(self) -> str:
        return self.base + "job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id


def types_key(prefix: str) -> str:
    """Set of known types: an index for listings, written outside any script and never
    needed by a type's own path (see streams.ensure_types)."""
    return f"{prefix}:types"


#: Hash tag of the worker registry: not a valid type name, so it is no type's slot.
WORKERS_TAG = "@workers"


def workers_key(prefix: str) -> str:
    """Sorted set of live worker names by last heartbeat (ms)."""
    return f"{prefix}:{{{WORKERS_TAG}}}:live"


def worker_key(prefix: str, name: str) -> str:
    """Hash describing one worker; expires when its heartbeat stops. Same slot as
    :func:`workers_key`: a heartbeat writes one node."""
    return f"{prefix}:{{{WORKERS_TAG}}}:worker:{name}"


def ready_probe_key(prefix: str) -> str:
    """A short-lived key the API's readiness check writes (its own hash tag)."""
    return f"{prefix}:{{ready}}:probe"
