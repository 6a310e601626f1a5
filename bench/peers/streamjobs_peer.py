"""streamjobs driver: run with the project's own interpreter (.venv/bin/python).

Besides the shared workloads it has two of its own: ``memory`` (bulk enqueue N, drain with
one in-process worker, report used_memory baseline / waiting / after) and ``scaling``
(N jobs drained by ``--workers`` ``python -m streamjobs worker`` processes, measured by polling
the type's stats hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = str(Path(HERE).parents[1])
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

import redis.asyncio as aioredis  # noqa: E402
from _common import Peer, log, payloads, rate_result, run_async_driver  # noqa: E402

from streamjobs import Job, Producer, Registry, Settings, Worker  # noqa: E402

TYPE = "bench"


class StreamjobsPeer(Peer):
    name = "streamjobs"
    version = version("streamjobs")
    bulk_note = "Producer.enqueue_many (pipelined Lua enqueue, chunked)"
    extra_workloads = ("memory", "scaling")
    extra_drains = ("memory",)

    def __init__(self, args):
        super().__init__(args)
        self.config = (f"Worker(concurrency={self.concurrency}) in-process, uvloop, "
                       "policy max_attempts=3 immediate_retries=1 backoff_base=0")

    async def setup(self):
        self.producer = Producer(self.args.url)
        self.redis = aioredis.from_url(self.args.url)
        self.mem0 = await self._used_memory()

    async def close(self):
        await self.producer.aclose()
        await self.redis.aclose()

    async def _used_memory(self) -> int:
        return int((await self.redis.info("memory"))["used_memory"])

    async def enqueue(self, payload):
        await self.producer.enqueue(TYPE, payload)

    async def enqueue_many(self, payloads):
        await self.producer.enqueue_many(TYPE, payloads)

    async def on_enqueued(self, res):
        self.mem_waiting = await self._used_memory()

    async def on_drained(self, res):
        await asyncio.sleep(0.2)  # let lazy frees settle
        after = await self._used_memory()
        n = self.args.n
        res["memory"] = {
            "baseline_bytes": self.mem0,
            "waiting_bytes": self.mem_waiting,
            "after_drain_bytes": after,
            "bytes_per_waiting_job": round((self.mem_waiting - self.mem0) / n, 1) if n else None,
            "after_minus_baseline_bytes": after - self.mem0,
        }

    async def worker(self):
        h = self.handler
        registry = Registry()

        @registry.handler(TYPE, max_attempts=3, immediate_retries=1, backoff_base=0.0)
        async def job(j: Job) -> None:
            await h.arun(j.payload)

        # The memory run keeps no completed records (result_ttl=0): it shows that acked
        # entries do not pile up. Other drains keep the default retention (1 h), so their
        # "after" figure includes the records kept for status and results.
        settings = Settings(result_ttl=0) if self.args.workload == "memory" else Settings()
        self.w = Worker(self.args.url, registry, concurrency=self.concurrency,
                        settings=settings)
        await self.w.run()

    async def stop_worker(self, task):
        self.w.stop()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()

    async def workload_scaling(self, res):
        """N jobs, ``--workers`` worker processes; polled completion rate (startup excluded)."""
        from streamjobs.config import Settings
        from streamjobs.keys import TypeKeys

        a = self.args
        stats = TypeKeys(Settings().prefix, "noop").stats
        await self.producer.enqueue_many("noop", payloads(a.n))
        env = dict(os.environ, STREAMJOBS_REDIS_URL=a.url)
        cmd = [sys.executable, "-m", "streamjobs", "worker", "bench.handlers_noop",
               "--concurrency", str(self.concurrency)]
        spawn = subprocess.Popen  # only spawned here; waited on after measuring
        procs = [spawn(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL) for _ in range(a.workers)]
        t0 = c0 = None
        done = 0
        end = time.perf_counter() + 240
        try:
            while time.perf_counter() < end:
                done = int(await self.redis.hget(stats, "completed") or 0)
                now = time.perf_counter()
                if t0 is None and done > 0:
                    t0, c0 = now, done
                if done >= a.n:
                    break
                await asyncio.sleep(0.01)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(15)
                if p.poll() is None:
                    p.kill()
        res.update(workers=a.workers, cpu_count=os.cpu_count(),
                   method="N pre-enqueued; polling sj:{noop}:stats completed every 10 ms, "
                          "from first completion seen to all completed")
        if t0 is None or done < a.n:
            res["error"] = f"scaling: {done}/{a.n} completed"
            return res
        res.update(rate_result(a.n - c0, now - t0))
        res["jobs_per_s_per_process"] = round(res["jobs_per_s"] / a.workers, 1)
        log(f"scaling {a.workers} procs: {res['jobs_per_s']} jobs/s")
        return res


if __name__ == "__main__":
    run_async_driver(StreamjobsPeer)
