"""rq driver (sync, SimpleWorker: no fork per job). Run with bench/.venvs/rq/bin/python."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

import _rq_jobs  # noqa: E402
from _common import Peer, run_sync_driver  # noqa: E402
from _rq_jobs import job  # noqa: E402
from redis import Redis  # noqa: E402
from rq import Queue, Retry, SimpleWorker  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

CHUNK = 1000


class RqPeer(Peer):
    name = "rq"
    version = version("rq")
    bulk_note = f"Queue.enqueue_many (prepare_data, one pipeline per {CHUNK})"
    config = ("SimpleWorker (one process, no fork), JSONSerializer (default is pickle), "
              "result_ttl=0, Retry(max=1) for fail_once, burst mode for drains")

    def setup(self):
        _rq_jobs.HANDLER = self.handler
        self.redis = Redis.from_url(self.args.url)
        self.queue = Queue("bench", connection=self.redis, serializer=JSONSerializer)
        self.retry = Retry(max=1) if self.args.workload == "drain_fail_once" else None

    def enqueue(self, payload):
        self.queue.enqueue(job, payload, result_ttl=0, retry=self.retry)

    def enqueue_many(self, payloads):
        for k in range(0, len(payloads), CHUNK):
            self.queue.enqueue_many([
                Queue.prepare_data(job, (p,), result_ttl=0, retry=self.retry)
                for p in payloads[k:k + CHUNK]
            ])

    def run_worker(self):
        self.w = SimpleWorker([self.queue], connection=self.redis, serializer=JSONSerializer)
        drain = self.args.workload != "e2e"
        self.w.work(burst=drain, max_jobs=None if drain else self.handler.rec.expected,
                    logging_level="WARNING")

    def stop_worker(self):
        self.w._stop_requested = True


if __name__ == "__main__":
    run_sync_driver(RqPeer)
