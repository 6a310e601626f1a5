"""dramatiq driver (RedisBroker, threaded Worker). Run with bench/.venvs/dramatiq/bin/python."""

from __future__ import annotations

import os
import sys
import threading
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

import dramatiq  # noqa: E402
from _common import Peer, run_sync_driver  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

THREADS = 16


class DramatiqPeer(Peer):
    name = "dramatiq"
    version = version("dramatiq")
    bulk_note = "no bulk API: sequential send() (one Lua call per message)"
    config = (f"RedisBroker, Worker(worker_threads={THREADS}, worker_timeout=100) in-process, "
              "default middleware "
              "(JSON encoder), Retry(delay=0) for fail_once")
    default_concurrency = THREADS

    def setup(self):
        self.broker = RedisBroker(url=self.args.url)
        dramatiq.set_broker(self.broker)
        h = self.handler

        @dramatiq.actor(actor_name="job", queue_name="bench", max_retries=3)
        def job(payload: dict) -> None:
            try:
                h.run(payload)
            except RuntimeError:  # the planned first failure
                raise dramatiq.Retry("fail once", delay=0) from None

        self.job = job
        self.stopped = threading.Event()

    def enqueue(self, payload):
        self.job.send(payload)

    def enqueue_many(self, payloads):
        for p in payloads:
            self.job.send(p)

    def run_worker(self):
        # worker_timeout: idle poll interval (default 1,000 ms), lowered for latency.
        w = dramatiq.Worker(self.broker, worker_threads=self.concurrency, worker_timeout=100)
        w.start()
        self.stopped.wait()
        w.stop(timeout=5000)

    def stop_worker(self):
        self.stopped.set()


if __name__ == "__main__":
    run_sync_driver(DramatiqPeer)
