"""streamjobs: a distributed job engine on Redis Streams.

The public API is ``__all__``; every other module is internal and may change.
"""

from streamjobs.config import Settings
from streamjobs.contract import Event, JobState
from streamjobs.counts import TypeStats
from streamjobs.dead import DeadJob, DeadLetters
from streamjobs.errors import (
    ConfigError,
    DecodeError,
    DuplicateJob,
    InvalidArgument,
    InvalidTypeName,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NotOwner,
    PayloadTooLarge,
    PermanentError,
    ResultTimeout,
    RetryAfter,
    ServerError,
    StreamJobsError,
    TransitionError,
    WrongState,
)
from streamjobs.events import Events, JobEvent
from streamjobs.job import Job
from streamjobs.producer import JobSpec, Producer, SyncProducer
from streamjobs.registry import Registry, handler
from streamjobs.retry import Policy
from streamjobs.status import JobStatus
from streamjobs.worker import Worker

__all__ = [
    "ResultTimeout",
    "JobFailed",
    "JobCancelled",
    "JobEvent",
    "Events",
    "Event",
    "ConfigError",
    "DeadJob",
    "DeadLetters",
    "DecodeError",
    "DuplicateJob",
    "InvalidArgument",
    "InvalidTypeName",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "NotOwner",
    "PayloadTooLarge",
    "PermanentError",
    "Policy",
    "Producer",
    "Registry",
    "RetryAfter",
    "ServerError",
    "Settings",
    "StreamJobsError",
    "SyncProducer",
    "TransitionError",
    "TypeStats",
    "Worker",
    "WrongState",
    "handler",
]
