"""The one place that names Redis keys.

Every key of a type shares the hash tag ``{type}`` so a transition touches one
cluster slot. Per-job keys are built inside Lua from ``job_prefix``, which is
itself passed in KEYS.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from streamjobs.contract import TYPE_NAME, Priority
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


#: Separates a type from its partition number in a hash tag (``T#1``): no type name has
#: it (``contract.TYPE_NAME``), so a partition's tag is never another type's.
PARTITION_SEP = "#"
#: Field of a type's config hash: how many partitions its jobs are spread over.
PARTITIONS_FIELD = "partitions"
#: Upper bound of ``partitions``.
MAX_PARTITIONS = 1024


def parse_partitions(raw: object) -> int:
    """A type's partition count from its config hash field (absent or unreadable: 1)."""
    try:
        n = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return n if 1 <= n <= MAX_PARTITIONS else 1


def partition_tag(type_: str, partition: int) -> str:
    """The hash tag of a type's partition: the type itself for partition 0 (so an
    unpartitioned type is partition 0 of 1), ``T#k`` for the others."""
    return type_ if partition == 0 else f"{type_}{PARTITION_SEP}{partition}"


#: Separates a hash tag from a priority level in a worker's name for one of its streams
#: (``T!high``, ``T#1!low``: :attr:`TypeKeys.name`); no type name has it.
LEVEL_SEP = "!"


def split_tag(tag: str) -> tuple[str, int]:
    """(type, partition) of a hash tag made by :func:`partition_tag` (or of a stream's
    name, :attr:`TypeKeys.name`: its level is ignored)."""
    tag = tag.partition(LEVEL_SEP)[0]
    type_, sep, k = tag.partition(PARTITION_SEP)
    if not sep:
        return tag, 0
    if not (k.isascii() and k.isdigit() and 0 < int(k) < MAX_PARTITIONS and k[0] != "0"):
        return tag, 0  # not a partition's tag (and no type name has a '#')
    return type_, int(k)


def partition_of_key(key: str, n: int) -> int:
    """The partition of a job enqueued with ``key``: CRC-32 (zlib's, of its UTF-8
    bytes) modulo ``n``, so a producer in any language puts one key's jobs in one
    partition, in order."""
    return zlib.crc32(key.encode()) % n if n > 1 else 0


@dataclass(frozen=True, slots=True)
class TypeKeys:
    """All keys of one job type, or of one partition of it (``partition`` > 0: the same
    keys under the tag ``{type#partition}``). ``type`` is always the type's own name."""

    prefix: str
    type: str
    partition: int = 0
    #: The priority level whose stream :attr:`stream` is: ``normal`` is the type's stream;
    #: every other key is the type's own whatever the level (one record, one delayed set).
    level: Priority = Priority.NORMAL

    def __post_init__(self) -> None:
        check_type_name(self.type)
        if not 0 <= self.partition < MAX_PARTITIONS:
            raise InvalidTypeName(f"partition {self.partition} of {self.type!r} is out of "
                                  f"range 0-{MAX_PARTITIONS - 1}")

    @property
    def tag(self) -> str:
        """The hash tag: the type, or ``type#partition``."""
        return partition_tag(self.type, self.partition)

    @property
    def name(self) -> str:
        """What a worker calls this stream: the tag, ``tag!level`` for a level's own."""
        return self.tag if self.level is Priority.NORMAL else self.tag + LEVEL_SEP + self.level

    def at(self, level: Priority) -> TypeKeys:
        """These keys with ``level``'s stream."""
        return TypeKeys(self.prefix, self.type, self.partition, Priority(level))

    def levels(self) -> list[TypeKeys]:
        """These keys at every level, the first read first."""
        return [self.at(level) for level in sorted(Priority, key=lambda p: p.rank)]

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.tag}}}:"

    @property
    def _own(self) -> str:
        """The prefix of the keys a type has once, under its own tag (partition 0's),
        whichever partition these keys are of."""
        return f"{self.prefix}:{{{self.type}}}:"

    @property
    def config(self) -> str:
        """The type's config hash (``partitions``): read from partition 0's tag, so a
        status or enqueue reads it with the type's own keys in one slot."""
        return self._own + "config"

    def partitions(self, n: int) -> list[TypeKeys]:
        """The keys of each of the type's ``n`` partitions (partition 0 first)."""
        return [TypeKeys(self.prefix, self.type, k) for k in range(max(1, n))]

    @property
    def stream(self) -> str:
        """The stream of :attr:`level`: ``stream`` (normal), ``stream:high``, ``stream:low``
        (the rule ``lua/includes/lane.lua`` follows)."""
        if self.level is Priority.NORMAL:
            return self.base + "stream"
        return self.base + "stream:" + self.level

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
    def expired(self) -> str:
        """Sorted set of expired job ids by expiry time (bounded by retention)."""
        return self.base + "expired"

    @property
    def cancels(self) -> str:
        """Sorted set of running job ids whose cancel was asked, by request time: the
        workers holding them poll it."""
        return self.base + "cancels"

    def dedup(self, key: str) -> str:
        """The key a ``dedup_key`` holds its job's id under (``lua/includes/dedup.lua``)."""
        return self.base + "dedup:" + key

    @property
    def blocked(self) -> str:
        """Sorted set: jobs waiting for their parents (``after``), by when their
        registration with the parents was last made sure of (engine/deps.py)."""
        return self.base + "blocked"

    @property
    def dep_outbox(self) -> str:
        """Hash: job id -> its final state, for a job others wait for that has ended and
        whose dependents are not all told yet (lua/includes/dependents.lua)."""
        return self.base + "dep_outbox"

    @property
    def deps_seen(self) -> str:
        """Present (a day, renewed) once a job of this type had a dependent registered:
        its workers then relay after their settles (engine/deps.py)."""
        return self.base + "deps_seen"

    def dependents(self, job_id: str) -> str:
        """Set: refs (``<tag>/<id>``) of the jobs waiting for ``job_id`` (depend.lua)."""
        return f"{self.base}dependents:{job_id}"

    @property
    def paused(self) -> str:
        """Present while the type is paused (its value: the server ms it was paused at);
        workers start no job of a paused type (engine/pause.py)."""
        return self._own + "paused"

    @property
    def schedules(self) -> str:
        """Hash: schedule name -> its definition (JSON) for schedules of this type."""
        return self._own + "schedules"

    @property
    def schedule_due(self) -> str:
        """Sorted set: schedule name -> its next run (server ms); a paused schedule is
        not in it."""
        return self._own + "schedule_due"

    @property
    def schedule_runs(self) -> str:
        """Hash: schedule name -> its last run (the tick's ms), written by
        schedule_tick.lua."""
        return self._own + "schedule_runs"

    @property
    def webhooks(self) -> str:
        """Hash: webhook name -> its definition (JSON: url, secret, events), called when
        a job of this type completes or ends dead (engine/webhooks.py)."""
        return self._own + "webhooks"

    @property
    def webhook_outbox(self) -> str:
        """Hash: entry id -> a notice of a job being settled whose webhooks are to be
        called (JSON: job id, its own webhook URL, ms written), from before its ack or
        fail until its deliveries are enqueued (engine/webhooks.py)."""
        return self.base + "webhook_outbox"

    @property
    def minutes(self) -> str:
        """Hash of minute (epoch minutes) -> the stats counters as first seen in that
        minute (the dashboard's throughput chart; see streamjobs.history)."""
        return self.base + "minutes"

    # Flow-control keys, written by stop.lua and lua/includes/slots.lua (the same names):
    # ``scope`` is ``@`` (the type's) or ``k:<limit_key>`` (a key's).

    def slots(self, scope: str) -> str:
        """Sorted set: the running job ids holding a concurrency slot, by lease end."""
        return f"{self.base}slots:{scope}"

    def held(self, scope: str) -> str:
        """List: ids of jobs parked over the scope's concurrency limit, in order."""
        return f"{self.base}held:{scope}"

    def rate(self, scope: str) -> str:
        """Sorted set: starts within the rate limit's window (members ``<ms>:<id>``)."""
        return f"{self.base}rate:{scope}"

    def rate_hold(self, scope: str) -> str:
        """Present (with a TTL) while a handler's ``RateLimited`` holds the scope back."""
        return f"{self.base}rate_hold:{scope}"

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
