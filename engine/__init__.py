"""streamjobs: a distributed job engine on Redis Streams.

The public API; everything else is internal.
"""

from engine.config import Settings
from engine.dead import DeadLetters
from engine.errors import PermanentError, RetryAfter, StreamJobsError
from engine.job import Job, JobState
from engine.producer import Producer, SyncProducer
from engine.registry import Registry, handler
from engine.retry import Policy
from engine.worker import Worker

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
