"""Shared helpers for the peer drivers (standard library only: they run in each peer's venv).

Driver protocol: ``<python> bench/peers/<peer>.py --url URL --workload NAME --n N
[--rate R] [--duration S] [--concurrency C]``; logs go to stderr and exactly one JSON
object is printed as the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

WORKLOADS = (
    "enqueue_latency",
    "enqueue_single",
    "enqueue_bulk",
    "drain_noop",
    "drain_sleep1ms",
    "drain_fail_once",
    "e2e",
    "enqueue_concurrent",
    "drain_io10ms",
    "drain_10kb",
)
DRAINS = ("drain_noop", "drain_sleep1ms", "drain_fail_once", "drain_io10ms", "drain_10kb")
#: enqueue_concurrent: this many callers, each awaiting its own single enqueue in a loop.
IN_FLIGHT = 100
#: drain_10kb: bytes of padding per payload.
PAD_BYTES = 10_240
DEADLINE_S = float(os.environ.get("BENCH_DRIVER_DEADLINE", "280"))
#: Processes a driver started (API, CLI workers): the watchdog kills them before exiting.
CHILDREN: list[subprocess.Popen] = []


def parse_args(extra_workloads: tuple[str, ...] = ()) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--workload", required=True, choices=WORKLOADS + extra_workloads)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=0, help="0 = the driver's default")
    p.add_argument("--workers", type=int, default=1, help="worker processes (scaling only)")
    p.add_argument("--pickups", type=int, default=50, help="many_types: idle pickups timed")
    p.add_argument("--role", default="main", choices=("main", "producer"))
    return p.parse_args()


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """Print the one JSON result line (last line of stdout) and flush."""
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(values_ms)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(q * len(s))) - 1))]

    return {
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(s[-1], 3),
        "samples": len(s),
    }


def rate_result(n: int, seconds: float) -> dict:
    jps = n / seconds if seconds > 0 else None
    return {
        "seconds": round(seconds, 4),
        "jobs_per_s": round(jps, 1) if jps else None,
        "jobs_per_min": round(jps * 60) if jps else None,
    }


class Recorder:
    """Thread-safe record of handler starts/completions inside the worker process.

    ``first_start`` .. ``last_done`` is the drain window; ``latencies_ms`` holds
    now - payload["t"] at handler start (e2e, wall clock, comparable across processes).
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.lock = threading.Lock()
        self.first_start: float | None = None
        self.last_done: float | None = None
        self.starts = 0
        self.done = 0
        self.failed_once = 0
        self.latencies_ms: list[float] = []
        self.seen: set = set()
        self.finished = threading.Event()

    def start(self, payload: dict | None = None) -> None:
        now = time.perf_counter()
        wall = time.time()
        with self.lock:
            if self.first_start is None:
                self.first_start = now
            self.starts += 1
            if payload and "t" in payload:
                self.latencies_ms.append((wall - payload["t"]) * 1000.0)

    def should_fail(self, key: object) -> bool:
        """Fail-once: True the first time a job key is seen in this (single) worker process."""
        with self.lock:
            if key in self.seen:
                return False
            self.seen.add(key)
            self.failed_once += 1
            return True

    def finish(self) -> None:
        now = time.perf_counter()
        with self.lock:
            self.last_done = now
            self.done += 1
            if self.done >= self.expected:
                self.finished.set()

    def drain_result(self) -> dict:
        if self.first_start is None or self.last_done is None:
            return {"error": f"no job completed ({self.done}/{self.expected})"}
        out = rate_result(self.done, self.last_done - self.first_start)
        out["completed"] = self.done
        out["attempts"] = self.starts
        return out


class Handler:
    """The one handler behaviour every driver uses, keyed by workload."""

    def __init__(self, workload: str, rec: Recorder) -> None:
        self.workload = workload
        self.rec = rec

    def run(self, payload: dict) -> None:
        """The whole handler for sync workers: start, fail once if due, sleep, finish."""
        self.before(payload)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.rec.finish()

    async def arun(self, payload: dict) -> None:
        """The whole handler for async workers."""
        self.before(payload)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        self.rec.finish()

    def before(self, payload: dict) -> None:
        """Call at handler start; raises on the first attempt for drain_fail_once."""
        self.rec.start(payload if self.workload == "e2e" else None)
        if self.workload == "drain_fail_once" and self.rec.should_fail(payload["i"]):
            raise RuntimeError("fail once (bench)")

    @property
    def sleep_s(self) -> float:
        return {"drain_sleep1ms": 0.001, "drain_io10ms": 0.010}.get(self.workload, 0.0)


def payloads(n: int, workload: str = "") -> list[dict]:
    if workload == "drain_10kb":
        pad = "x" * PAD_BYTES
        return [{"i": i, "pad": pad} for i in range(n)]
    return [{"i": i} for i in range(n)]


def start_watchdog(seconds: float, base: dict, rec: Recorder | None = None) -> None:
    """Bound the driver's run time: print an error result and hard-exit on expiry."""

    def fire() -> None:
        for child in CHILDREN:  # os._exit skips every finally: end them here
            with contextlib.suppress(OSError):
                child.kill()
        res = dict(base)
        prog = f" ({rec.done}/{rec.expected} done)" if rec else ""
        res["error"] = f"driver deadline {seconds:.0f}s exceeded{prog}"
        emit(res)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def e2e_expected(args: argparse.Namespace) -> int:
    return int(args.rate * args.duration)


def spawn_producer(args: argparse.Namespace, delay: float = 1.0) -> threading.Thread:
    """Start ``<this driver> --role producer`` after ``delay`` s (once the worker is up)."""

    def go() -> None:
        time.sleep(delay)
        cmd = [sys.executable, sys.argv[0], "--url", args.url, "--workload", "e2e",
               "--n", str(args.n), "--rate", str(args.rate), "--duration", str(args.duration),
               "--role", "producer"]
        subprocess.run(cmd, stdout=sys.stderr, timeout=args.duration + 60, check=False)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def base_result(peer: str, version: str, args: argparse.Namespace, config: str,
                method: str = "") -> dict:
    return {"peer": peer, "version": version, "workload": args.workload, "n": args.n,
            "config": config, "method": method}


def paced_schedule(rate: float, duration: float):
    """Yield (i, due) send times on a fixed schedule (absolute: no coordinated omission)."""
    total = int(rate * duration)
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        yield i, t0 + i / rate


class Peer:
    """What a driver supplies. Async drivers define the ``async`` versions, sync ones the
    plain versions (see run_async_driver / run_sync_driver)."""

    name = "?"
    version = "?"
    config = ""
    bulk_note = ""
    #: Concurrency when --concurrency is not given (thread-pool peers use fewer).
    default_concurrency = 100
    handler: Handler

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.concurrency = args.concurrency or self.default_concurrency


METHOD_INPROC = "in-process worker: first handler start .. last handler completion (perf_counter)"
WARMUP = 20


def _finish_drain(res: dict, rec: Recorder, ok: bool) -> dict:
    res.update(rec.drain_result())
    if not ok and "error" not in res:
        res["error"] = f"timed out: {rec.done}/{rec.expected} completed"
    if rec.failed_once:
        res["failed_first_attempts"] = rec.failed_once
    return res


def _e2e_result(res: dict, rec: Recorder, ok: bool) -> dict:
    res.update(percentiles(rec.latencies_ms))
    res["completed"] = rec.done
    res["rate"] = None
    if not ok:
        res["error"] = f"e2e timed out: {rec.done}/{rec.expected} completed"
    return res


async def _async_enqueue_workloads(peer, a, res: dict) -> dict:
    import asyncio  # noqa: F401  (only async drivers need it)

    if a.workload == "enqueue_latency":
        for i in range(WARMUP):
            await peer.enqueue({"i": -i - 1})
        lat = []
        for i in range(a.n):
            t = time.perf_counter()
            await peer.enqueue({"i": i})
            lat.append((time.perf_counter() - t) * 1000.0)
        res.update(percentiles(lat))
    elif a.workload == "enqueue_single":
        t = time.perf_counter()
        for i in range(a.n):
            await peer.enqueue({"i": i})
        res.update(rate_result(a.n, time.perf_counter() - t))
    elif a.workload == "enqueue_concurrent":
        res.update(await _async_concurrent(peer, a.n))
    else:
        data = payloads(a.n)
        t = time.perf_counter()
        await peer.enqueue_many(data)
        res.update(rate_result(a.n, time.perf_counter() - t))
        res["bulk"] = peer.bulk_note
    return res


def _concurrent_result(n: int, seconds: float, lat: list[float]) -> dict:
    out = rate_result(n, seconds)
    out.update(percentiles(lat))
    out["in_flight"] = IN_FLIGHT
    return out


async def _async_concurrent(peer, n: int) -> dict:
    """IN_FLIGHT coroutines, each awaiting its own single enqueue in turn (a web app's
    request handlers): jobs/s over all, and the latency of each call."""
    import asyncio

    await asyncio.gather(*(peer.enqueue({"i": -i - 1}) for i in range(WARMUP)))
    lat: list[float] = []
    per = [range(k, n, IN_FLIGHT) for k in range(IN_FLIGHT)]

    async def caller(ids: range) -> None:
        for i in ids:
            t = time.perf_counter()
            await peer.enqueue({"i": i})
            lat.append((time.perf_counter() - t) * 1000.0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(ids) for ids in per))
    out = _concurrent_result(n, time.perf_counter() - t0, lat)
    out["concurrency_model"] = f"{IN_FLIGHT} asyncio tasks on one event loop"
    return out


def _threaded_concurrent(peer, n: int) -> dict:
    """Sync peers: IN_FLIGHT threads, each enqueueing its share one call at a time."""
    lat: list[float] = []
    lock = threading.Lock()

    def caller(ids: range) -> None:
        mine = []
        for i in ids:
            t = time.perf_counter()
            peer.enqueue({"i": i})
            mine.append((time.perf_counter() - t) * 1000.0)
        with lock:
            lat.extend(mine)

    for i in range(WARMUP):
        peer.enqueue({"i": -i - 1})
    threads = [threading.Thread(target=caller, args=(range(k, n, IN_FLIGHT),))
               for k in range(IN_FLIGHT)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out = _concurrent_result(n, time.perf_counter() - t0, lat)
    out["concurrency_model"] = f"{IN_FLIGHT} threads (the peer's client is sync)"
    return out


async def _async_produce(peer, a) -> None:
    import asyncio

    for i, due in paced_schedule(a.rate, a.duration):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await peer.enqueue({"i": i, "t": time.time()})


async def _async_wait(rec: Recorder, limit_s: float) -> bool:
    import asyncio

    end = time.perf_counter() + limit_s
    # rec.finished is a threading.Event (sync handlers set it from threads): poll it
    while not rec.finished.is_set() and time.perf_counter() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return rec.finished.is_set()


async def _quietly(coro, limit_s: float = 15.0) -> None:
    """Worker shutdown happens after measuring: bound it and only log its errors."""
    import asyncio

    try:
        await asyncio.wait_for(coro, limit_s)
    except (Exception, asyncio.CancelledError) as e:
        log(f"shutdown: {type(e).__name__}: {e}")


async def _async_main(peer_cls) -> None:
    import asyncio

    a = parse_args(tuple(getattr(peer_cls, "extra_workloads", ())))
    peer = peer_cls(a)
    res = base_result(peer.name, peer.version, a, peer.config, METHOD_INPROC)
    expected = e2e_expected(a) if a.workload == "e2e" else a.n
    rec = Recorder(expected)
    peer.handler = Handler(a.workload, rec)
    start_watchdog(DEADLINE_S, res, rec)
    await peer.setup()
    try:
        if a.role == "producer":
            await _async_produce(peer, a)
            return
        custom = getattr(peer, f"workload_{a.workload}", None)
        if custom is not None:  # peer-specific extra workloads (streamjobs: scaling)
            emit(await custom(res))
            return
        if a.workload.startswith("enqueue"):
            res["method"] = "client-side wall clock around the enqueue call(s)"
            emit(await _async_enqueue_workloads(peer, a, res))
            return
        if a.workload in DRAINS + tuple(getattr(peer, "extra_drains", ())):
            await peer.enqueue_many(payloads(a.n, a.workload))
            if hasattr(peer, "on_enqueued"):
                await peer.on_enqueued(res)
        task = asyncio.create_task(peer.worker())
        if a.workload == "e2e":
            res["method"] = "producer subprocess at fixed rate; handler records now - t_sent"
            res["rate"], res["duration"] = a.rate, a.duration
            await asyncio.sleep(0.5)
            spawn_producer(a, delay=0.5)
            ok = await _async_wait(rec, a.duration + 60)
        else:
            ok = await _async_wait(rec, DEADLINE_S - 20)
        await _quietly(peer.stop_worker(task))
        if a.workload == "e2e":
            res = _e2e_result(res, rec, ok)
            res["rate"] = a.rate
        else:
            res = _finish_drain(res, rec, ok)
            if hasattr(peer, "on_drained"):
                await peer.on_drained(res)
        emit(res)
    finally:
        await _quietly(peer.close())


def quiet_logs() -> None:
    """Per-job log lines (e.g. one traceback per failed attempt) would dominate the
    measurement: every driver disables logging below CRITICAL unless BENCH_DRIVER_LOGS=1."""
    import logging

    if os.environ.get("BENCH_DRIVER_LOGS") != "1":
        logging.disable(logging.ERROR)


def run_async_driver(peer_cls) -> None:
    import asyncio

    quiet_logs()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_async_main(peer_cls))
    except Exception as e:  # report, never crash silently
        import traceback

        traceback.print_exc()
        emit({"peer": peer_cls.name, "error": f"{type(e).__name__}: {e}"})
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def _sync_main(peer_cls) -> None:
    a = parse_args()
    peer = peer_cls(a)
    res = base_result(peer.name, peer.version, a, peer.config, METHOD_INPROC)
    expected = e2e_expected(a) if a.workload == "e2e" else a.n
    rec = Recorder(expected)
    peer.handler = Handler(a.workload, rec)
    start_watchdog(DEADLINE_S, res, rec)
    peer.setup()
    if a.role == "producer":
        for i, due in paced_schedule(a.rate, a.duration):
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            peer.enqueue({"i": i, "t": time.time()})
        return
    if a.workload.startswith("enqueue"):
        res["method"] = "client-side wall clock around the enqueue call(s)"
        if a.workload == "enqueue_latency":
            for i in range(WARMUP):
                peer.enqueue({"i": -i - 1})
            lat = []
            for i in range(a.n):
                t = time.perf_counter()
                peer.enqueue({"i": i})
                lat.append((time.perf_counter() - t) * 1000.0)
            res.update(percentiles(lat))
        elif a.workload == "enqueue_single":
            t = time.perf_counter()
            for i in range(a.n):
                peer.enqueue({"i": i})
            res.update(rate_result(a.n, time.perf_counter() - t))
        elif a.workload == "enqueue_concurrent":
            res.update(_threaded_concurrent(peer, a.n))
        else:
            data = payloads(a.n)
            t = time.perf_counter()
            peer.enqueue_many(data)
            res.update(rate_result(a.n, time.perf_counter() - t))
            res["bulk"] = peer.bulk_note
        emit(res)
        return
    if a.workload == "drain_io10ms":
        res["error"] = ("not comparable: thread-pool worker (an I/O wait holds a thread; "
                        "the async peers run 200 at once)")
        emit(res)
        return
    if a.workload in DRAINS:
        peer.enqueue_many(payloads(a.n, a.workload))
    if a.workload == "e2e":
        res["method"] = "producer subprocess at fixed rate; handler records now - t_sent"
        spawn_producer(a, delay=1.0)
    ok = _run_worker_until(peer, rec, a.duration + 60 if a.workload == "e2e" else DEADLINE_S - 20)
    if a.workload == "e2e":
        res = _e2e_result(res, rec, ok)
        res["rate"] = a.rate
    else:
        res = _finish_drain(res, rec, ok)
    emit(res)


def _run_worker_until(peer, rec: Recorder, timeout: float) -> bool:
    """Run the peer's blocking worker in the main thread (signal handlers, SIGALRM job
    timeouts need it); a monitor thread stops it once the recorder has everything."""

    def monitor() -> None:
        rec.finished.wait(timeout)
        try:
            peer.stop_worker()
        except Exception as e:
            log(f"stop_worker: {type(e).__name__}: {e}")

    threading.Thread(target=monitor, daemon=True).start()
    try:
        peer.run_worker()
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # after measuring: log only
        log(f"run_worker ended: {type(e).__name__}: {e}")
    return rec.finished.is_set()


def run_sync_driver(peer_cls) -> None:
    quiet_logs()
    try:
        _sync_main(peer_cls)
    except Exception as e:
        import traceback

        traceback.print_exc()
        emit({"peer": peer_cls.name, "error": f"{type(e).__name__}: {e}"})
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
