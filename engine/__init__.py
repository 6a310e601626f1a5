"""streamjobs: a distributed job engine on Redis Streams.

The public API is ``__all__``; every other module is internal and may change.
"""

from streamjobs.config import Settings
from streamjobs.contract import DedupMode, Event, JobState, ParentPolicy, Priority
from streamjobs.counts import TypeStats
from streamjobs.dead import DeadJob, DeadLetters
from streamjobs.errors import (
    ConfigError,
    DecodeError,
    DuplicateJob,
    EventsOff,
    InvalidArgument,
    InvalidTypeName,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    NotOwner,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    ResultTimeout,
    RetryAfter,
    ServerError,
    StreamJobsError,
    TransitionError,
    WrongState,
)
from streamjobs.events import Events, JobEvent
from streamjobs.job import Job
from streamjobs.producer import (
    Cancelled,
    CancelOutcome,
    Enqueued,
    JobSpec,
    Producer,
    SyncProducer,
)
from streamjobs.registry import Registry, handler
from streamjobs.retry import Policy
from streamjobs.schedules import Schedule
from streamjobs.status import JobStatus
from streamjobs.webhooks import Webhook
from streamjobs.worker import Worker
from streamjobs.workflows import Step, chain, group

__all__ = [
    "ResultTimeout",
    "JobFailed",
    "JobCancelled",
    "JobExpired",
    "JobEvent",
    "Events",
    "EventsOff",
    "Event",
    "CancelOutcome",
    "Cancelled",
    "ConfigError",
    "DeadJob",
    "DeadLetters",
    "DecodeError",
    "DedupMode",
    "DuplicateJob",
    "Enqueued",
    "InvalidArgument",
    "InvalidTypeName",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "NotOwner",
    "PayloadTooLarge",
    "ParentPolicy",
    "PermanentError",
    "Priority",
    "Policy",
    "Producer",
    "Registry",
    "RateLimited",
    "RetryAfter",
    "Schedule",
    "ServerError",
    "Settings",
    "Step",
    "StreamJobsError",
    "SyncProducer",
    "TransitionError",
    "TypeStats",
    "Webhook",
    "Worker",
    "WrongState",
    "chain",
    "group",
    "handler",
]
