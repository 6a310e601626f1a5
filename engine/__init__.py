"""streamjobs: a distributed job engine on Redis Streams.

The public API; everything else is internal.
"""

from streamjobs.config import Settings
from streamjobs.dead import DeadLetters
from streamjobs.errors import PermanentError, RetryAfter, StreamJobsError
from streamjobs.job import Job, JobState
from streamjobs.producer import Producer, SyncProducer
from streamjobs.registry import Registry, handler
from streamjobs.retry import Policy
from streamjobs.worker import Worker

__all__ = [
    "DeadLetters",
    "Job",
    "JobState",
    "PermanentError",
    "Policy",
    "Producer",
    "Registry",
    "RetryAfter",
    "Settings",
    "StreamJobsError",
    "SyncProducer",
    "Worker",
    "handler",
]
