"""celery driver (redis broker, in-process worker). Run with bench/.venvs/celery/bin/python."""

from __future__ import annotations

import os
import signal
import sys
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))  # drivers share names with their peers:
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import Peer, run_sync_driver  # noqa: E402
from celery import Celery  # noqa: E402

POOL = os.environ.get("BENCH_CELERY_POOL", "threads")
THREADS = 16
PREFETCH = 4


class CeleryPeer(Peer):
    name = "celery"
    version = version("celery")
    bulk_note = "no bulk API: sequential apply_async on one producer connection"
    config = (f"redis broker, in-process worker pool={POOL} concurrency={THREADS}, "
              f"worker_prefetch_multiplier={PREFETCH}, ignore_result, no "
              "mingle/gossip/heartbeat, JSON, self.retry(countdown=0) for fail_once")
    default_concurrency = 1 if POOL == "solo" else THREADS

    def setup(self):
        app = Celery("bench", broker=self.args.url, set_as_current=True)
        app.conf.update(
            task_serializer="json", accept_content=["json"], task_ignore_result=True,
            worker_prefetch_multiplier=PREFETCH, worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True, task_default_queue="bench",
            worker_send_task_events=False, worker_redirect_stdouts=False,
        )
        h = self.handler

        @app.task(name="job", bind=True, max_retries=3)
        def job(task, payload: dict) -> None:
            try:
                h.run(payload)
            except RuntimeError as e:  # the planned first failure
                raise task.retry(exc=e, countdown=0) from None

        self.app, self.job = app, job
        self.producer_cm = app.producer_or_acquire()
        self.producer = self.producer_cm.__enter__()

    def enqueue(self, payload):
        self.job.apply_async((payload,), producer=self.producer)

    def enqueue_many(self, payloads):
        for p in payloads:
            self.job.apply_async((p,), producer=self.producer)

    def run_worker(self):
        w = self.app.Worker(pool=POOL, concurrency=self.concurrency, loglevel="WARNING",
                            without_heartbeat=True, without_mingle=True,
                            without_gossip=True, quiet=True, queues=["bench"])
        w.start()  # blocks; celery's own SIGTERM handler does a warm shutdown

    def stop_worker(self):
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    run_sync_driver(CeleryPeer)
