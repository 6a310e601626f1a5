"""The floors under the headline: what a bare client reaches on this machine with no engine
features, each beside streamjobs in the same round (rounds interleaved, fresh server per
run). A gap between a floor and streamjobs is the engine's; a gap between a floor and a
target is the machine's or the client library's.

    python -m bench.floors [--rounds 3] [--n 20000] [--only drain,e2e,http]

- ``drain``: a bare redis-py consumer (uvloop, hiredis), one process. ``XREADGROUP COUNT
  100``; each payload decoded with orjson and run by a no-op coroutine in its own task
  (concurrency 100, as a worker runs handlers); the batch's ``XACK`` + ``XDEL`` in one
  pipeline. No job record, retries, events or metrics. Beside it: ``streamjobs worker``
  (the CLI, its own process) on the same jobs enqueued by ``enqueue_many``.
- ``e2e``: one process enqueues at 500 jobs/s with its wall-clock time in the payload,
  another records now - t when the job reaches it, in four pairings: a bare producer
  (``XADD`` of the wire format) or ``Producer.enqueue``, and a bare consumer
  (``XREADGROUP BLOCK``, on receipt) or a streamjobs ``Worker`` (in-process, uvloop, at
  the handler's start). The pairings split the engine's latency between its two sides.
- ``http``: a bare ASGI app (no framework) on uvicorn + httptools whose one route calls
  ``Producer.enqueue``, loaded by wrk (50 clients, 5 s). Beside it: ``streamjobs api``.

Writes ``bench/results/floors.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.server import fresh_server, stop_process

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PEERS = ROOT / "bench" / "peers"
E2E_RATE, E2E_SECONDS = 500, 10
STREAM, GROUP = "floor", "g"


# --- the bare clients (each runs in its own process: ``python -m bench.floors --role``) ---

async def _bare_drain(url: str, n: int) -> dict:
    import orjson
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(STREAM, {"payload": orjson.dumps({"i": i})})
        if len(pipe) == 1000:
            await pipe.execute()
    await pipe.execute()

    async def handler(payload: object) -> None:
        return None

    async def run(fields: dict) -> None:
        await handler(orjson.loads(fields[b"payload"]))

    done = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while done < n:
        reply = await r.xreadgroup(GROUP, "c", {STREAM: ">"}, count=100)
        if not reply:
            continue
        entries = reply[0][1]
        await asyncio.gather(*(asyncio.create_task(run(f)) for _, f in entries))
        ids = [eid for eid, _ in entries]
        ack = r.pipeline(transaction=False)
        ack.xack(STREAM, GROUP, *ids)
        ack.xdel(STREAM, *ids)
        await ack.execute()
        done += len(ids)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    await r.aclose()
    return {"jobs_per_s": round(n / secs, 1), "client_us_per_job": round(cpu / n * 1e6, 1)}


E2E_TYPE = "e2e"


def _e2e_stream() -> str:
    from streamjobs.keys import TypeKeys

    return TypeKeys("sj", E2E_TYPE).stream


def _latencies(lat: list[float]) -> dict:
    lat.sort()
    return {"jobs": len(lat), "p50_ms": round(lat[len(lat) // 2], 3),
            "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}


async def _e2e_consumer(url: str, via: str, expected: int) -> dict:
    import orjson
    import redis.asyncio as aioredis

    lat: list[float] = []
    if via == "sj":
        from streamjobs import Job, Registry, Worker

        reg = Registry()
        done = asyncio.Event()

        @reg.handler(E2E_TYPE)
        async def record(job: Job) -> None:
            lat.append((time.time() - job.payload["t"]) * 1000)
            if len(lat) >= expected:
                done.set()

        worker = Worker(url, reg, concurrency=100)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(done.wait(), E2E_SECONDS + 60)
        worker.stop()
        await task
        return _latencies(lat)
    r = aioredis.from_url(url)
    stream = _e2e_stream()
    while len(lat) < expected:
        reply = await r.xreadgroup(GROUP, "c", {stream: ">"}, count=10, block=5000)
        if not reply:
            break
        now = time.time()
        entries = reply[0][1]
        lat += [(now - orjson.loads(f[b"payload"])["t"]) * 1000 for _, f in entries]
        await r.xack(stream, GROUP, *[eid for eid, _ in entries])
    await r.aclose()
    return _latencies(lat)


async def _e2e_producer(url: str, via: str) -> None:
    import orjson
    import redis.asyncio as aioredis

    from streamjobs import Producer

    r = aioredis.from_url(url)
    p = Producer(url)
    stream = _e2e_stream()
    t0 = time.perf_counter() + 0.05
    for i in range(E2E_RATE * E2E_SECONDS):
        delay = t0 + i / E2E_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if via == "sj":
            await p.enqueue(E2E_TYPE, {"t": time.time()})
        else:  # the wire format, as any language's producer writes it
            await r.xadd(stream, {"payload": orjson.dumps({"t": time.time()})})
    await p.aclose()
    await r.aclose()


def _asgi_app(url: str):
    """No framework: read the body, ``Producer.enqueue`` its payload, answer its id."""
    import orjson

    from streamjobs import Producer

    producer: list[Producer] = []

    async def app(scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    producer.append(Producer(url))
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await producer[0].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        job_id = await producer[0].enqueue("bench", orjson.loads(body)["payload"])
        out = orjson.dumps({"id": job_id, "state": "waiting"})
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


def _serve_asgi(url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(_asgi_app(url), host="127.0.0.1", port=port, http="httptools",
                loop="uvloop", access_log=False, log_level="warning")


# --- the rounds ---

def _me(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.floors", *args]


def _json_out(cmd: list[str], timeout: float) -> dict:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _streamjobs(workload: str, n: int) -> dict:
    """The bench's own run of a streamjobs workload (bench/run.py), on a fresh server."""
    from bench.run import Plan, interpreter, run_workload

    cmd, err = interpreter("streamjobs")
    assert cmd is not None, err
    plan = Plan.make(False, ("streamjobs",), (workload,))
    return run_workload("streamjobs", cmd, workload, n, plan)


def drain_round(n: int) -> dict:
    with fresh_server("floor-drain") as url:
        bare = _json_out(_me("--role", "drain", "--url", url, "--n", str(n)), 600)
    sj = _streamjobs("drain_cli", n)
    return {"bare": bare, "streamjobs": {"jobs_per_s": sj.get("jobs_per_s")}}


#: (producer, consumer) pairings of the e2e round, bare or streamjobs ("sj").
E2E_PAIRS = (("bare", "bare"), ("sj", "bare"), ("bare", "sj"), ("sj", "sj"))


def e2e_round() -> dict:
    out = {}
    for producer, consumer in E2E_PAIRS:
        with fresh_server(f"floor-e2e-{producer}-{consumer}") as url:
            import redis

            redis.Redis.from_url(url).xgroup_create(_e2e_stream(), GROUP, id="$",
                                                    mkstream=True)
            proc = subprocess.Popen(
                _me("--role", "e2e-consumer", "--via", consumer, "--url", url), cwd=ROOT,
                stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)  # the consumer is up (a Worker creates its group)
            subprocess.run(_me("--role", "e2e-producer", "--via", producer, "--url", url),
                           cwd=ROOT, check=True, timeout=E2E_SECONDS + 60)
            res, _ = proc.communicate(timeout=E2E_SECONDS + 60)
        out[f"{producer}/{consumer}"] = json.loads(res.strip().splitlines()[-1])
    return {"bare": out["bare/bare"], "streamjobs": out["sj/sj"], "pairs": out}


def http_round() -> dict:
    sys.path.insert(0, str(PEERS))
    from _wrk import _free_port, api_process, run_wrk  # the bench's wrk runner

    out: dict = {}
    with fresh_server("floor-http") as url:
        port = _free_port()
        proc = subprocess.Popen(_me("--role", "asgi", "--url", url, "--port", str(port)),
                                cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_http(base)
            out["bare"] = _wrk_figures(run_wrk(base, False, 50, 5))
        finally:
            stop_process(proc, 10)
    with fresh_server("floor-http-sj") as url, \
            api_process(sys.executable, str(ROOT), url) as base:
        out["streamjobs"] = _wrk_figures(run_wrk(base, False, 50, 5))
    return out


def _wrk_figures(res: dict) -> dict:
    return {k: res.get(k) for k in ("req_per_s", "p50_ms", "p99_ms", "error")
            if res.get(k) is not None}


def _wait_http(base: str) -> None:
    import urllib.error
    import urllib.request

    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(base, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{base} did not answer within 30 s")


FIGURES = {  # (round key, side, field, label)
    "drain": [("jobs_per_s", "drain no-op, one process (jobs/s)")],
    "e2e": [("p50_ms", "e2e at 500 jobs/s p50 (ms)"), ("p99_ms", "e2e at 500 jobs/s p99 (ms)")],
    "http": [("req_per_s", "HTTP enqueue, 50 clients (req/s)"),
             ("p99_ms", "HTTP enqueue, 50 clients p99 (ms)")],
}


def markdown(data: dict) -> str:
    lines = ["# Floors: a bare client beside streamjobs", "",
             f"{data['when']} · commit {data['commit']} · {data['rounds']} rounds · "
             f"load at start {data['load']}", "",
             "| figure | bare client, each round (median) | streamjobs, each round (median) |",
             "|---|---|---|"]
    for part, rows in FIGURES.items():
        rounds = data["results"].get(part)
        if not rounds:
            continue
        for field, label in rows:
            cells = []
            for side in ("bare", "streamjobs"):
                vals = [r[side].get(field) for r in rounds]
                nums = [v for v in vals if isinstance(v, int | float)]
                med = f" ({statistics.median(nums):,.2f})" if nums else ""
                cells.append(" / ".join(f"{v:,.2f}" if isinstance(v, int | float) else "-"
                                        for v in vals) + med)
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    pairs = [r.get("pairs") for r in data["results"].get("e2e", []) if r.get("pairs")]
    if pairs:
        lines += ["", "e2e at 500 jobs/s by pairing (producer / consumer; each round, median):",
                  "", "| producer / consumer | p50 ms | p99 ms |", "|---|---|---|"]
        for name in pairs[0]:
            cells = []
            for field in ("p50_ms", "p99_ms"):
                vals = [p[name][field] for p in pairs]
                cells.append(" / ".join(f"{v:.2f}" for v in vals)
                             + f" ({statistics.median(vals):.2f})")
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "Reproduce: `python -m bench.floors`", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--only", default="drain,e2e,http")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--via", default="bare", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        import uvloop

        if a.role == "asgi":
            _serve_asgi(a.url, a.port)
            return 0
        work = {"drain": lambda: _bare_drain(a.url, a.n),
                "e2e-consumer": lambda: _e2e_consumer(a.url, a.via, E2E_RATE * E2E_SECONDS),
                "e2e-producer": lambda: _e2e_producer(a.url, a.via)}[a.role]
        res = uvloop.run(work())
        print(json.dumps(res or {}))
        return 0
    parts = [p for p in a.only.split(",") if p]
    results: dict[str, list[dict]] = {p: [] for p in parts}
    for i in range(a.rounds):
        for part in parts:
            res = {"drain": lambda: drain_round(a.n), "e2e": e2e_round,
                   "http": http_round}[part]()
            print(f"round {i + 1} {part}: {json.dumps(res)}", flush=True)
            results[part].append(res)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    data = {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit,
            "rounds": a.rounds, "load": [round(x, 2) for x in os.getloadavg()],
            "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "floors.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / "floors.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
