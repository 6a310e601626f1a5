"""The wire contract, defined once: states and transitions, failure vocabulary, field names.

Every name the Lua scripts, the engine and the API share lives here; the Lua side is
held against it by ``tests/test_script_headers.py`` (state literals, ``moves:`` lines,
``HINCRBY`` names, dead reasons). ``docs/protocol.md`` describes the same contract for
producers in other languages.

Field-name enums are ``StrEnum`` (redis-py writes them as their text); ``.b`` is the
same name as bytes, for reading replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from streamjobs.errors import PayloadTooLarge

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class _Name(StrEnum):
    """A field name: its text, and ``.b`` the same as bytes."""

    b: bytes

    def __init__(self, value: str) -> None:
        self.b = value.encode()


# ---- states and transitions --------------------------------------------------------------


class JobState(StrEnum):
    #: In the stream, not yet delivered to a worker.
    WAITING = "waiting"
    #: Delivered to a worker and not yet finished (in the group's pending list).
    RUNNING = "running"
    #: Scheduled for later, or waiting out a backoff, in the delayed set.
    DELAYED = "delayed"
    #: Finished successfully; the record is kept for the result retention.
    COMPLETED = "completed"
    #: In the dead stream: attempts exhausted, permanent error, poison or malformed.
    DEAD = "dead"
    #: Cancelled before it ran, or while it ran (``Producer.cancel`` of a running job).
    CANCELLED = "cancelled"
    #: Not started by its ``expires_at``: never runs.
    EXPIRED = "expired"
    #: Waiting for its parents (``after``) to end: in its type's blocked set, in no
    #: stream yet (``parent_done.lua`` moves it on).
    BLOCKED = "blocked"


#: Delivery (XREADGROUP) is the move to running and no script sees it, so a running job's
#: record says waiting and the group's pending list tells the two apart. Lua names the
#: same choice ``RUNNING_RECORDED_AS`` in ``lua/includes/states.lua``.
RUNNING_RECORDED_AS = JobState.WAITING
#: Pseudo-states of the ``moves:`` lines: before a job exists, after its record is gone.
NEW = "new"
GONE = "gone"


@dataclass(frozen=True, slots=True)
class Move:
    """``sources -> targets``: the job may leave any source for any target."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{', '.join(self.sources)} -> {', '.join(self.targets)}"


def _m(sources: str, targets: str) -> Move:
    return Move(tuple(sources.split()), tuple(targets.split()))


_W, _R, _D = JobState.WAITING, JobState.RUNNING, JobState.DELAYED
#: Delivery by XREADGROUP: the one move that is not a script.
FETCH = "fetch"
#: Every transition (a Lua script of that name, or :data:`FETCH`) and the moves it makes;
#: an empty tuple is a script that moves no job. Each script's ``-- moves:`` lines say the
#: same (checked by the header test).
TRANSITIONS: dict[str, tuple[Move, ...]] = {
    "enqueue": (_m(NEW, f"{_W} {_D} {JobState.BLOCKED}"),),
    FETCH: (_m(_W, _R),),
    "ack": (_m(_R, JobState.COMPLETED),),
    "fail": (_m(_R, f"{_W} {_D} {JobState.DEAD}"),),
    "release": (_m(_R, f"{_W} {JobState.DEAD}"),),
    "reclaim": (_m(_R, f"{_R} {JobState.DEAD}"),),
    "promote": (_m(_D, f"{_W} {JobState.EXPIRED}"),),
    "cancel": (_m(f"{_W} {_D} {JobState.BLOCKED}", JobState.CANCELLED),),
    "stop": (_m(_R, f"{JobState.EXPIRED} {JobState.CANCELLED} {_D}"),),
    "dead_retry": (_m(JobState.DEAD, _W),),
    "dead_purge": (_m(JobState.DEAD, GONE),),
    "touch": (),
    "prune_consumers": (),
    #: Writes the ``started`` events of a fetched batch (delivery itself is FETCH).
    "started": (),
    #: A running attempt's progress and log lines.
    "progress": (),
    "schedule_tick": (_m(NEW, _W),),
    #: Registers a dependent with a parent job (its slot); moves neither.
    "depend": (),
    #: A parent of a blocked job ended: the child waits on, starts, or follows its policy.
    "parent_done": (_m(JobState.BLOCKED,
                       f"{JobState.BLOCKED} {_W} {JobState.DEAD} {JobState.CANCELLED}"),),
}


# ---- failures and outcomes ---------------------------------------------------------------


class Failure(StrEnum):
    """How an attempt failed: the ``mode`` ``fail.lua`` takes, and a dead entry's
    ``reason`` (the same string both ways)."""

    #: The retry policy decides (attempts left: backoff; none: ``EXHAUSTED``).
    RETRY = "retry"
    #: Like RETRY, after the handler's own delay (``RetryAfter``).
    AFTER = "after"
    #: The attempt ran over its time limit; the policy decides like RETRY.
    TIMEOUT = "timeout"
    #: A ``PermanentError``: dead at once.
    PERMANENT = "permanent"
    #: The entry breaks the wire format: dead at once.
    MALFORMED = "malformed"
    #: Reason only: the last attempt failed.
    EXHAUSTED = "attempts exhausted"
    #: Reason only: delivered over ``max_deliveries`` times without finishing (reclaim).
    POISON = "poison"
    #: A foreign entry whose ``id`` belongs to another job (its record is left alone).
    DUPLICATE_ID = "duplicate id"
    #: Reason only: a parent (``after``) ended dead, cancelled or expired and the job's
    #: ``on_parent_failure`` is fail (dead) or drop (cancelled).
    PARENT_FAILED = "parent failed"


#: Modes a worker sends to ``fail.lua``; the other members are dead reasons only.
FAIL_MODES = (Failure.RETRY, Failure.AFTER, Failure.TIMEOUT, Failure.PERMANENT,
              Failure.MALFORMED, Failure.DUPLICATE_ID)


class Attempt(StrEnum):
    """What one attempt came to, as the worker decides it (label ``outcome`` of
    ``streamjobs_attempt_duration_seconds``). Failures carry their :class:`Failure` text."""

    OK = "ok"
    RETRY = Failure.RETRY.value
    AFTER = Failure.AFTER.value
    TIMEOUT = Failure.TIMEOUT.value
    PERMANENT = Failure.PERMANENT.value
    MALFORMED = Failure.MALFORMED.value
    #: Handed back unfinished at shutdown (no attempt spent).
    RELEASED = "released"
    #: The handler raised ``RateLimited``: handed back, no attempt spent, its type (or
    #: key) held back for the seconds it gave.
    RATE_LIMITED = "rate_limited"
    #: Cancelled because the entry was reclaimed by another worker: settles nothing.
    LOST = "lost"
    #: Settled by ``stop.lua`` before or instead of running: its ``expires_at`` passed,
    #: it was a plain XADD duplicate of an active ``dedup_key``, or it was cancelled.
    STOPPED = "stopped"


class Outcome(StrEnum):
    """Label ``outcome`` of ``streamjobs_jobs_total``: each settled attempt counts once."""

    COMPLETED = "completed"
    #: Failed and retried (not a timeout).
    RETRIED = "retried"
    #: Failed into the dead stream (not a timeout), or dead-lettered as poison.
    DEAD = "dead"
    #: Ran over its time limit (retried or dead: counted here only).
    TIMEOUT = "timeout"
    #: The worker no longer owned the entry when it finished (reclaimed elsewhere).
    ACK_REFUSED = "ack_refused"
    #: Not started by its ``expires_at`` (found so at start; promote's are not counted here).
    EXPIRED = "expired"
    #: Cancelled while running.
    CANCELLED = "cancelled"
    #: A plain XADD entry dropped at start as a duplicate of an active ``dedup_key``.
    DEDUPLICATED = "deduplicated"


# ---- field names -------------------------------------------------------------------------


class Wire(_Name):
    """Stream-entry fields with a meaning to the engine; every other field is a header."""

    PAYLOAD = "payload"
    ID = "id"
    MAX_ATTEMPTS = "max_attempts"
    TIMEOUT = "timeout"
    ENQUEUED_AT = "enqueued_at"
    ATTEMPTS = "attempts"
    #: ``1`` on an entry whose ``id`` the enqueue script claimed in its record (it refuses a
    #: taken id): the worker's duplicate-id read at fetch is skipped for it, the one read
    #: per fetch a plain XADD's ``id`` costs. A producer that writes it itself vouches for
    #: its id; a duplicate that does so is still dead-lettered when it settles, after a run.
    ID_CLAIMED = "id_claimed"
    #: Ms since the epoch (server clock): a job not started by then ends ``expired``.
    EXPIRES_AT = "expires_at"
    #: Ms from the enqueue (enqueue.lua turns it into ``expires_at``; a plain XADD
    #: gives ``expires_at``).
    EXPIRES_IN = "expires_in"
    #: Deduplication: the key, the mode (:class:`DedupMode`) and the window in ms.
    DEDUP_KEY = "dedup_key"
    DEDUP_MODE = "dedup_mode"
    DEDUP_TTL = "dedup_ttl"
    #: An http(s) URL called when the job completes or ends dead (engine/webhooks.py):
    #: the worker that settles it enqueues a delivery job of ``streamjobs.webhook``.
    WEBHOOK = "webhook"
    #: The key of ``max_running_per_key`` (1-128 printable ASCII, no spaces): a job's
    #: slot is its key's. ``Producer.enqueue(key=...)`` writes it.
    LIMIT_KEY = "limit_key"
    #: The jobs this one waits for (``enqueue(after=...)``): a JSON list of
    #: ``"<tag>/<id>"`` (the parent's hash tag, i.e. its type or ``type#partition``, and
    #: id). Only through ``enqueue.lua``:
    #: the job is ``blocked`` until each has ended (docs/protocol.md, *Dependencies*).
    DEPENDS_ON = "depends_on"
    #: What a parent that ends dead, cancelled or expired does to this job
    #: (:class:`ParentPolicy`; default fail).
    ON_PARENT_FAILURE = "on_parent_failure"
    #: Written when a blocked job starts: JSON objects, parent ref -> its result (null
    #: when none or not completed) and -> its final state.
    PARENT_RESULTS = "parent_results"
    PARENT_STATES = "parent_states"
    #: The job's level (:class:`Priority`): ``high`` and ``low`` jobs wait in streams of
    #: their own (``TypeKeys.stream`` of that level), read before / after the type's
    #: stream; a delayed, retried or released job goes back to its level's stream.
    PRIORITY = "priority"


RESERVED = frozenset(Wire)
#: The same names as bytes, as entries arrive (the decoder's hot path: no decode to check).
RESERVED_B = frozenset(w.b for w in Wire)
_ID_B, _PAYLOAD_B = Wire.ID.b, Wire.PAYLOAD.b
_DEDUP_MODE_B, _TIMEOUT_B = Wire.DEDUP_MODE.b, Wire.TIMEOUT.b


class Rec(_Name):
    """Fields of a job's record hash (``<prefix>:{type}:job:<id>``)."""

    STATE = "state"
    ENTRY = "entry"
    ENQUEUED_AT = "enqueued_at"
    #: Attempts made (a completed job's counts the one that succeeded).
    ATTEMPTS = "attempts"
    #: The limit the last attempt ran under (job field or the type's policy), once known.
    MAX_ATTEMPTS = "max_attempts"
    DUE_AT = "due_at"
    UPDATED_AT = "updated_at"
    FINISHED_AT = "finished_at"
    #: The consumer whose ack completed the job (tells a replayed ack from a late one).
    FINISHED_BY = "finished_by"
    ERROR = "error"
    TRACEBACK = "traceback"
    REASON = "reason"
    RESULT = "result"
    DEAD_ENTRY = "dead_entry"
    #: The mark of the enqueue call that made the job (a replay of it is no duplicate).
    TOKEN = "token"
    #: How long the completed attempt ran (ms, as its worker measured it; -1 unknown).
    DURATION_MS = "duration_ms"
    #: The last progress a handler reported (0..1) and its message (``progress.lua``).
    PROGRESS = "progress"
    PROGRESS_MESSAGE = "progress_message"
    #: The handler's log lines, newline-separated, the last :data:`LOG_LINES` kept.
    LOGS = "logs"
    #: One JSON object per failed attempt, newline-separated, the last
    #: :data:`HISTORY_LENGTH`: attempt, started_at, duration_ms, worker, outcome (an Event)
    #: and error. A completed attempt is not in it: its record's fields tell.
    HISTORY = "history"
    #: The ``dedup_key`` a unique-while-active job holds; every final transition frees it.
    UNIQUE = "unique"
    #: A cancel of the running job was asked (``requested``); ``uninterruptible`` once its
    #: worker found the attempt cannot be stopped (a sync handler in a thread).
    CANCEL = "cancel"
    #: Concurrency slots the job holds (space-separated scopes: ``@`` the type's,
    #: ``k:<limit_key>`` its key's); every final transition frees them.
    SLOTS = "slots"
    #: The scope a job parked over a limit waits for, and the lease it was parked with.
    HELD = "held"
    HELD_LEASE = "held_lease"
    #: The job's level when not ``normal`` (:class:`Priority`): which stream its entry is in.
    PRIORITY = "priority"
    #: A blocked job: how many of its parents have not ended yet.
    DEPS_LEFT = "deps_left"
    #: ``1`` on a job other jobs wait for: its end goes into its type's dependency outbox.
    DEPENDENTS = "dependents"


#: A blocked job's record keeps each parent that ended as ``dep:<ref>`` -> its final
#: state, and a completed one's result as ``depr:<ref>``.
DEP_STATE = "dep:"
DEP_RESULT = "depr:"


class ParentPolicy(StrEnum):
    """What a parent that ends dead, cancelled or expired does to a job waiting for it."""

    #: The child ends dead (reason ``parent failed``): visible, retryable by hand.
    FAIL = "fail"
    #: The child runs anyway once its parents have ended (``job.parent_states`` tells).
    RUN = "run"
    #: The child ends cancelled (reason ``parent failed``), never runs.
    DROP = "drop"


class Priority(StrEnum):
    """A job's level. Workers start every waiting job of a higher level before any of a
    lower one (per type); ``normal`` jobs are the type's stream itself, so a type that
    never uses the others reads one stream, as before."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is read first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class DedupMode(StrEnum):
    """How an enqueue with a ``dedup_key`` treats an existing job of that key."""

    #: While the key's job exists (or for ``dedup_ttl``): return that job's id.
    THROTTLE = "throttle"
    #: The key's job not started yet: replace its payload and push its start back.
    DEBOUNCE = "debounce"
    #: While the key's job is waiting, delayed or running: return that job's id.
    UNIQUE = "unique"


class CancelMark(StrEnum):
    """Values of a record's ``cancel`` field."""

    REQUESTED = "requested"
    UNINTERRUPTIBLE = "uninterruptible"


#: A delayed or dead job's own fields are kept under this prefix (record or dead entry).
STASH = "f:"
STASH_B = STASH.encode()


class DeadField(_Name):
    """Fields of a dead-stream entry (besides the job's own, under :data:`STASH`)."""

    ID = "id"
    REASON = "reason"
    ERROR = "error"
    ATTEMPTS = "attempts"
    FAILED_AT = "failed_at"


class Stat(_Name):
    """Counters of a type's stats hash (the ``HINCRBY`` names of the scripts)."""

    ENQUEUED = "enqueued"
    COMPLETED = "completed"
    RETRIED = "retried"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RELEASED = "released"
    RECLAIMED = "reclaimed"
    DEAD_RETRIED = "dead_retried"
    PURGED = "purged"
    EXPIRED = "expired"
    #: Enqueues answered with an existing job of their ``dedup_key`` (and plain XADD
    #: duplicates dropped at start).
    DEDUPLICATED = "deduplicated"
    #: Cron ticks enqueued (schedule_tick.lua).
    CRON_TICKS = "cron_ticks"
    #: Starts held back by a concurrency limit (the job parked, no attempt spent).
    HELD = "held"
    #: Starts held back by a rate limit (the job delayed, no attempt spent).
    RATE_LIMITED = "rate_limited"
    #: Not a count: the sequence of generated ids of delayed jobs.
    SEQ = "seq"


class Heartbeat(_Name):
    """Fields of a worker's hash (``<prefix>:worker:<name>``)."""

    NAME = "name"
    HOST = "host"
    PID = "pid"
    TYPES = "types"
    CONCURRENCY = "concurrency"
    IN_FLIGHT = "in_flight"
    STARTED_AT = "started_at"
    LAST_HEARTBEAT = "last_heartbeat"
    #: JSON list of the jobs running now: ``{"type", "id", "started_at", "attempt"}``
    #: each (at most ``HEARTBEAT_RUNNING_MAX``; ``in_flight`` is the full count).
    RUNNING = "running"
    #: JSON object: each type's retry policy (``Policy`` fields) as this worker runs it.
    POLICIES = "policies"


#: Running jobs a heartbeat lists by id (a worker of high concurrency lists the oldest).
HEARTBEAT_RUNNING_MAX = 100


# ---- events ------------------------------------------------------------------------------


class Event(StrEnum):
    """The ``event`` field of an events-stream entry (``<prefix>:{type}:events``): written
    by the script that makes the transition (``lua/includes/emit.lua``)."""

    ENQUEUED = "enqueued"
    #: An attempt began (delivery itself, XREADGROUP, is no script): written with the
    #: attempt's ack or fail, or by ``started.lua`` if it runs past the worker's next
    #: settle (a few ms), before any progress of its own. ``at`` is when it began.
    STARTED = "started"
    #: A handler's ``job.progress()`` (carries ``progress`` and ``message``).
    PROGRESS = "progress"
    COMPLETED = "completed"
    #: An attempt failed (carries ``error``); ``retrying`` or ``dead`` follows.
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    #: Cancelled while waiting or delayed (``cancel``), while running or deduplicated at
    #: its start (``stop``; carries ``reason``).
    CANCELLED = "cancelled"
    #: Not started by its ``expires_at`` (``stop`` at its start, ``promote``).
    EXPIRED = "expired"
    #: A debounce enqueue gave this job (not started yet) new fields and start time
    #: (``enqueue``; carries ``due_at``).
    DEBOUNCED = "debounced"
    #: A dead job put back to waiting with fresh attempts (``dead_retry``).
    DEAD_RETRIED = "dead_retried"
    #: Its parents have ended: a blocked job moved to waiting (``parent_done``).
    UNBLOCKED = "unblocked"


#: The events that end a job: a waiter for its result stops at one of them.
FINAL_EVENTS = frozenset({Event.COMPLETED, Event.DEAD, Event.CANCELLED, Event.EXPIRED})


class EventField(_Name):
    """Fields of an events-stream entry."""

    EVENT = "event"
    ID = "id"
    #: The attempt's number (1-based); 0 for a job that has not run.
    ATTEMPT = "attempt"
    #: Server time of the transition, ms since the epoch.
    AT = "at"
    #: ``failed``/``dead``: the error; ``dead``: also ``reason``.
    ERROR = "error"
    REASON = "reason"
    #: ``retrying``: when the next attempt is due (ms); ``started``: the consumer.
    DUE_AT = "due_at"
    CONSUMER = "consumer"
    PROGRESS = "progress"
    MESSAGE = "message"


#: Approximate cap of a type's events stream (``XADD MAXLEN ~``): the Lua side is
#: ``lua/includes/events_maxlen.lua``.
EVENTS_MAXLEN = 10_000
#: A type's events are switched off by a string in place of its events stream (the
#: scripts see it with one TYPE per call): ``streamjobs events TYPE off``.
EVENTS_OFF = "off"
#: A job keeps its handler's last LOG_LINES log lines, each cut to LOG_LINE_CHARS.
LOG_LINES = 100
LOG_LINE_CHARS = 1000
#: Attempts a record's history keeps (``lua/includes/history.lua``).
HISTORY_LENGTH = 25

# ---- patterns and rules ------------------------------------------------------------------

#: Printable ASCII, no spaces: job ids and header names.
JOB_ID_PATTERN = r"[!-~]{1,128}"
HEADER_NAME_PATTERN = JOB_ID_PATTERN
#: Not "." or "..": a URL path cannot carry them (clients resolve them away).
TYPE_NAME_PATTERN = r"(?!\.\.?$)[A-Za-z0-9_.\-]{1,64}"
#: [0-9], not \d: \d also matches other scripts' digits, which int() reads and the server not.
STREAM_ID_PATTERN = r"[0-9]{1,20}-[0-9]{1,20}"
JOB_ID = re.compile(JOB_ID_PATTERN)
JOB_ID_B = re.compile(JOB_ID_PATTERN.encode())
TYPE_NAME = re.compile(TYPE_NAME_PATTERN)
STREAM_ID = re.compile(STREAM_ID_PATTERN)

# ---- the entry rules: lua/includes/entry_problem.lua applies the same ---------------------

#: Fields of one stream entry at most (a script re-adds an entry with one XADD, and Lua's
#: unpack() takes ~8,000 values).
MAX_FIELDS = 256
#: Fields of a job handed to enqueue at most: the engine may add ``id``, ``id_claimed`` and
#: ``attempts`` to its entry (``MAX_JOB_FIELDS`` in ``lua/includes/max_fields.lua``).
MAX_JOB_FIELDS = MAX_FIELDS - 3
#: Integer fields: decimal digits only, at most 15 (exact in Lua's doubles, no sign,
#: point or exponent); with their minimum.
INTEGER_FIELDS: dict[bytes, int] = {Wire.ATTEMPTS.b: 0, Wire.MAX_ATTEMPTS.b: 1,
                                    Wire.ENQUEUED_AT.b: 0, Wire.EXPIRES_AT.b: 0,
                                    Wire.EXPIRES_IN.b: 0, Wire.DEDUP_TTL.b: 0}
INTEGER = re.compile(rb"[0-9]{1,15}")
#: ``timeout``: a positive decimal, at most 9 digits either side of the point.
DECIMAL = re.compile(rb"[0-9]{1,9}(?:\.[0-9]{1,9})?")


class EntryFields(dict[bytes, bytes]):
    """An entry's fields when some names repeat: the dict keeps the last value of each,
    ``repeated`` names the others (such an entry is malformed)."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[bytes, bytes]], repeated: frozenset[bytes]) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def fields_of(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """An entry's flat field list as a dict, repeated names kept track of."""
    if len(flat) % 2:
        raise ValueError(f"an entry's field list has an odd length ({len(flat)})")
    it = iter(flat)
    fields = dict(zip(it, it, strict=False))  # the length is checked above
    if len(fields) * 2 == len(flat):
        return fields
    pairs = list(zip(flat[::2], flat[1::2], strict=True))
    seen: set[bytes] = set()
    repeated = frozenset(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return EntryFields(pairs, repeated)


def _repeated(fields: Mapping[bytes, bytes]) -> frozenset[bytes]:
    return fields.repeated if isinstance(fields, EntryFields) else frozenset()


def job_id_of(entry_id: str, fields: Mapping[bytes, bytes]) -> str:
    """A job's id: the entry's ``id`` field, else the entry id (a plain XADD). An id that
    breaks :data:`JOB_ID_PATTERN` (or is repeated) is not an id: the entry id stands in,
    so a malformed entry's dead record is still addressable."""
    raw = fields.get(_ID_B)
    if raw is None or not JOB_ID_B.fullmatch(raw) or _ID_B in _repeated(fields):
        return entry_id
    return raw.decode()


DEDUP_MODES = frozenset(DedupMode)
PRIORITIES = frozenset(Priority)
PARENT_POLICIES = frozenset(ParentPolicy)


def entry_problem(fields: Mapping[bytes, bytes]) -> str | None:
    """Why an entry breaks the wire format (``docs/protocol.md``), or None. The payload's
    JSON and size are the decoder's to check; everything a script reads is checked here."""
    if len(fields) > MAX_FIELDS:
        return f"entry has {len(fields)} fields, over the limit of {MAX_FIELDS}"
    repeated = _repeated(fields)
    if repeated:
        return f"field {min(repeated)[:40]!r} appears more than once"
    if _PAYLOAD_B not in fields:
        return "entry has no payload field"
    raw_id = fields.get(_ID_B)
    if raw_id is not None and not JOB_ID_B.fullmatch(raw_id):
        return f"id {raw_id[:40]!r} is not 1-128 printable ASCII characters without spaces"
    for name, minimum in INTEGER_FIELDS.items():
        raw = fields.get(name)
        if raw is not None and (not INTEGER.fullmatch(raw) or int(raw) < minimum):
            return (f"{name.decode()} {raw[:40]!r} is not an integer >= {minimum} "
                    "of at most 15 digits")
    raw = fields.get(_DEDUP_MODE_B)
    if raw is not None and raw.decode("latin-1") not in DEDUP_MODES:
        return f"dedup_mode {raw[:40]!r} is not throttle, debounce or unique"
    raw = fields.get(_TIMEOUT_B)
    if raw is not None and (not DECIMAL.fullmatch(raw) or not float(raw) > 0):
        return f"timeout {raw[:40]!r} is not a positive decimal (at most 9 digits each side)"
    return None


def check_payload_size(body: bytes, limit: int) -> bytes:
    """``body`` when it is at most ``limit`` bytes, else raise PayloadTooLarge."""
    if len(body) > limit:
        raise PayloadTooLarge(f"payload is {len(body)} bytes, over the limit of {limit}")
    return body
