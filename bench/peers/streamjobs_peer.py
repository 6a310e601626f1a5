"""streamjobs driver: run with the project's own interpreter (.venv/bin/python).

Besides the shared workloads it has its own: ``memory`` (bulk enqueue N, drain with
one in-process worker, report used_memory baseline / waiting / after), ``scaling``
(N jobs drained by ``--workers`` ``python -m streamjobs worker`` processes, measured by polling
the type's stats hash), ``drain_cli`` (the same with one CLI worker: the way users run it),
``many_types`` (one worker on 50 types: idle pickup, sparse traffic, drain) and
``http_enqueue`` (``streamjobs api`` in its own process, loaded by wrk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = str(Path(HERE).parents[1])
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

from _common import (  # noqa: E402
    CHILDREN,
    Peer,
    log,
    payloads,
    percentiles,
    rate_result,
    run_async_driver,
)
from _wrk import api_process, api_workers_supported, run_wrk  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402

from streamjobs import Job, Producer, Registry, Settings, Worker  # noqa: E402
from streamjobs.connection import client_from_url, is_cluster  # noqa: E402
from streamjobs.events import switch_events  # noqa: E402
from streamjobs.keys import TypeKeys  # noqa: E402
from streamjobs.producer import JobSpec  # noqa: E402

TYPE = "bench"
#: Flow-control options for the bench type's handler, to show what they cost, e.g.
#: BENCH_LIMITS='{"max_running": 1000000}' or '{"rate_limit": "1000000/s"}'.
LIMITS = json.loads(os.environ.get("BENCH_LIMITS") or "{}")
#: BENCH_PRIORITY=high (every job high) or mixed (high, normal, low in turn): the cost of
#: reading the bench type at more than one priority level.
PRIORITY = os.environ.get("BENCH_PRIORITY") or ""
LEVELS = {"": [], "high": ["high"], "mixed": ["high", "normal", "low"]}[PRIORITY]
MANY_TYPES = 50
#: many_types bounds: each pickup, the idle phase, the drain.
PICKUP_WAIT_S = 10.0
PICKUP_PHASE_S = 60.0
MANY_DRAIN_LIMIT_S = 120.0


class StreamjobsPeer(Peer):
    name = "streamjobs"
    version = version("streamjobs")
    bulk_note = "Producer.enqueue_many (pipelined Lua enqueue, chunked)"
    extra_workloads = ("memory", "scaling", "drain_cli", "many_types", "http_enqueue")
    extra_drains = ("memory",)

    def __init__(self, args):
        super().__init__(args)
        self.config = (f"Worker(concurrency={self.concurrency}) in-process, uvloop, "
                       "policy max_attempts=3 immediate_retries=1 backoff_base=0")

    async def setup(self):
        self.producer = Producer(self.args.url)
        self.redis = client_from_url(self.args.url)  # one server or a cluster
        if os.environ.get("BENCH_EVENTS") == "off":  # what the events stream costs
            await switch_events(self.redis, TypeKeys("sj", TYPE), False)
        self.mem0 = await self._used_memory()

    async def close(self):
        await self.producer.aclose()
        await self.redis.aclose()

    async def _used_memory(self) -> int:
        if is_cluster(self.redis):  # summed over the primaries
            per_node = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return sum(int(info["used_memory"]) for info in per_node.values())
        return int((await self.redis.info("memory"))["used_memory"])

    async def enqueue(self, payload):
        await self.producer.enqueue(TYPE, payload)

    async def enqueue_many(self, payloads):
        if LEVELS:
            await self.producer.enqueue_batch(TYPE, [
                JobSpec(p, priority=LEVELS[i % len(LEVELS)]) for i, p in enumerate(payloads)])
            return
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

        @registry.handler(TYPE, max_attempts=3, immediate_retries=1, backoff_base=0.0,
                          **LIMITS)
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
        res = await self._cli_drain(res, self.args.workers)
        if "error" not in res:
            res["jobs_per_s_per_process"] = round(res["jobs_per_s"] / self.args.workers, 1)
            log(f"scaling {self.args.workers} procs: {res['jobs_per_s']} jobs/s")
        return res

    async def workload_drain_cli(self, res):
        """One ``python -m streamjobs worker`` process, as users start it."""
        res = await self._cli_drain(res, 1)
        res["config"] = ("`python -m streamjobs worker bench.handlers_noop --concurrency "
                         f"{self.concurrency}` in its own process")
        return res

    async def _cli_drain(self, res, workers: int):
        from streamjobs.keys import TypeKeys

        a = self.args
        stats = TypeKeys(Settings().prefix, "noop").stats
        await self.producer.enqueue_many("noop", payloads(a.n))
        env = dict(os.environ, STREAMJOBS_REDIS_URL=a.url)
        cmd = [sys.executable, "-m", "streamjobs", "worker", "bench.handlers_noop",
               "--concurrency", str(self.concurrency)]
        spawn = subprocess.Popen  # only spawned here; waited on after measuring
        t_spawn = time.perf_counter()
        procs = [spawn(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL) for _ in range(workers)]
        CHILDREN.extend(procs)
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
                await asyncio.sleep(0.005)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(15)
                if p.poll() is None:
                    p.kill()
        res.update(workers=workers, cpu_count=os.cpu_count(),
                   method="N pre-enqueued; polling sj:{noop}:stats completed every 5 ms, "
                          "from first completion seen to all completed (jobs_per_s) and "
                          "from process spawn (jobs_per_s_from_spawn)")
        if t0 is None or done < a.n:
            res["error"] = f"cli drain: {done}/{a.n} completed"
            return res
        res.update(rate_result(a.n - c0, now - t0))
        res["jobs_per_s_from_spawn"] = round(a.n / (now - t_spawn), 1)
        res["startup_s"] = round(t0 - t_spawn, 3)
        return res

    # ---- many types: one in-process worker consuming 50 types ----------------------

    async def workload_many_types(self, res):
        a = self.args
        types = [f"t{k:02d}" for k in range(MANY_TYPES)]
        starts: dict[int, float] = {}
        arrived = asyncio.Event()
        registry = Registry()

        async def job(j: Job) -> None:
            starts[j.payload["i"]] = time.time()
            arrived.set()

        for t in types:
            registry.handler(t, max_attempts=3, backoff_base=0.0)(job)
        per = max(1, a.n // MANY_TYPES)
        for t in types:
            await self.producer.enqueue_many(t, [{"i": -1} for _ in range(per)])
        total = per * MANY_TYPES
        drained = asyncio.Event()
        done = 0
        t_first = t_last = 0.0

        async def count(j: Job) -> None:
            nonlocal done, t_first, t_last
            now = time.perf_counter()
            if not done:
                t_first = now
            done += 1
            t_last = now
            if done >= total:
                drained.set()

        counting = Registry()
        for t in types:
            counting.handler(t, max_attempts=3, backoff_base=0.0)(count)
        w = Worker(a.url, counting, concurrency=self.concurrency)
        task = asyncio.create_task(w.run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), MANY_DRAIN_LIMIT_S)
        w.stop()
        await asyncio.wait_for(task, 15)
        drain = (rate_result(done, t_last - t_first) if done >= total
                 else {"error": f"drain over {MANY_TYPES} types: {done}/{total} in "
                                f"{MANY_DRAIN_LIMIT_S:.0f} s"})
        w = Worker(a.url, registry, concurrency=self.concurrency)
        task = asyncio.create_task(w.run())
        try:
            await asyncio.sleep(1.0)  # the worker settles into its blocking read
            idle = await self._pickups(types, starts, arrived, a.pickups)
            sparse = await self._sparse(types, starts, a.duration)
        finally:
            w.stop()
            await asyncio.wait_for(task, 15)
        res.update(types=MANY_TYPES, drain=drain, pickup_idle=idle, pickup_sparse=sparse,
                   jobs_per_s=drain.get("jobs_per_s"), p50_ms=idle.get("p50_ms"),
                   p99_ms=idle.get("p99_ms"),
                   method=("one in-process Worker on 50 types. drain: N spread evenly, first "
                           "start..last done. pickup_idle: one job into a random type after "
                           "0.2 s idle, send .. handler start (wall clock), each waited up to "
                           f"{PICKUP_WAIT_S:.0f} s. pickup_sparse: 2 jobs/s into random types"))
        for part in ("drain", "pickup_idle", "pickup_sparse"):
            if "error" in res[part]:
                res["error"] = f"{part}: {res[part]['error']}"
        return res

    async def _pickups(self, types, starts, arrived, k: int) -> dict:
        lat, missed = [], 0
        deadline = time.perf_counter() + PICKUP_PHASE_S
        for i in range(k):
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.2)
            arrived.clear()
            sent = time.time()
            await self.producer.enqueue(random.choice(types), {"i": i})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), PICKUP_WAIT_S)
            if i in starts:
                lat.append((starts[i] - sent) * 1000.0)
            else:
                missed += 1
        out = percentiles(lat)
        if missed or not lat:
            out["error"] = (f"{missed} of {missed + len(lat)} pickups not started within "
                            f"{PICKUP_WAIT_S:.0f} s")
        return out

    async def _sparse(self, types, starts, duration: float) -> dict:
        rate = 2.0
        total = max(4, int(rate * duration))
        first = 10_000
        sent: dict[int, float] = {}
        t0 = time.perf_counter()
        for k in range(total):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            i = first + k
            sent[i] = time.time()
            await self.producer.enqueue(random.choice(types), {"i": i})
        end = time.perf_counter() + PICKUP_WAIT_S
        # the handler fills `starts`: poll it, bounded
        while any(i not in starts for i in sent) and time.perf_counter() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        lat = [(starts[i] - t) * 1000.0 for i, t in sent.items() if i in starts]
        out = percentiles(lat)
        out["rate"] = rate
        if len(lat) < total:
            out["error"] = f"{total - len(lat)} of {total} sparse jobs not started"
        return out

    # ---- HTTP enqueue through `streamjobs api` -----------------------------------------

    async def workload_http_enqueue(self, res):
        """wrk against one ``streamjobs api`` process: single and bulk POST, 1 and 50
        clients; then ``--workers <cores>`` if the CLI has it."""
        a = self.args
        secs = a.duration
        runs: dict = {}
        with api_process(sys.executable, ROOT, a.url) as base:
            for name, bulk, clients in (("single_c1", False, 1), ("single_c50", False, 50),
                                        ("bulk_c1", True, 1), ("bulk_c50", True, 50)):
                runs[name] = await asyncio.to_thread(run_wrk, base, bulk, clients, secs)
                log(f"http {name}: {runs[name]}")
        cores = os.cpu_count() or 1
        if api_workers_supported(sys.executable, ROOT):
            with api_process(sys.executable, ROOT, a.url, workers=cores) as base:
                runs[f"single_c50_workers{cores}"] = await asyncio.to_thread(
                    run_wrk, base, False, 50, secs)
        else:
            res["note"] = "`streamjobs api --workers N` does not exist yet: not measured"
        head = runs["single_c50"]
        res.update(runs=runs, req_per_s=head.get("req_per_s"), p50_ms=head.get("p50_ms"),
                   p99_ms=head.get("p99_ms"), jobs_per_s=runs["bulk_c50"].get("jobs_per_s"),
                   config=("`streamjobs api` (one uvicorn worker) in its own process; wrk "
                           f"{secs:.0f} s per run, keep-alive, threads = min(clients, cores); "
                           "bulk = 100 jobs per POST"),
                   method="wrk's own latency histogram (per request) and request count")
        bad = [f"{k}: {r['error']}" for k, r in runs.items() if "error" in r]
        if bad:
            res["error"] = "; ".join(bad)[:400]
        return res


if __name__ == "__main__":
    run_async_driver(StreamjobsPeer)
