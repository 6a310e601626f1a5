"""huey driver (RedisHuey, thread workers, JSON serializer).

Run with bench/.venvs/huey/bin/python.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_sync_driver  # noqa: E402
from huey import RedisHuey  # noqa: E402
from huey.registry import Message  # noqa: E402
from huey.serializer import Serializer  # noqa: E402

THREADS = 16


class JSONSerializer(Serializer):
    """huey's default serializer is pickle; the bench never uses pickle."""

    def _serialize(self, data):
        if isinstance(data, Message):
            return json.dumps(["m", list(data)]).encode()
        return json.dumps(["v", data]).encode()

    def _deserialize(self, data):
        kind, value = json.loads(data)
        return Message(*value) if kind == "m" else value


class HueyPeer(Peer):
    name = "huey"
    version = version("huey")
    bulk_note = "no bulk API: sequential enqueue (one LPUSH per task)"
    config = (f"RedisHuey(blocking=True, results=False), consumer workers={THREADS} "
              "worker_type=thread, JSON serializer (default is pickle), "
              "retries=1 retry_delay=0 for fail_once")
    default_concurrency = THREADS

    def setup(self):
        self.huey = RedisHuey("bench", url=self.args.url, results=False, blocking=True,
                              serializer=JSONSerializer())
        h = self.handler

        @self.huey.task(retries=1 if self.args.workload == "drain_fail_once" else 0,
                        retry_delay=0, name="job")
        def job(payload: dict) -> None:
            h.run(payload)

        self.job = job
        self.stopped = threading.Event()

    def enqueue(self, payload):
        self.job(payload)

    def enqueue_many(self, payloads):
        for p in payloads:
            self.job(p)

    def run_worker(self):
        c = self.huey.create_consumer(workers=self.concurrency, worker_type="thread",
                                      periodic=False, check_worker_health=False)
        c.start()
        self.stopped.wait()
        c.stop(graceful=False)

    def stop_worker(self):
        self.stopped.set()


if __name__ == "__main__":
    run_sync_driver(HueyPeer)
