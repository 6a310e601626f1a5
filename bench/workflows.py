"""What dependencies cost: N independent jobs, a group of N with a callback, and a chain of
N steps, each run by one CLI worker process (``streamjobs worker bench.handlers_noop``)
on a fresh private server, rounds interleaved; medians and spread.

    python -m bench.workflows [--n 1000] [--chain 100] [--rounds 3]

Times run from the first enqueue call to the last job's completion (the record's
``finished_at``, server clock), so a workflow's enqueue (one call per step, each
registered with its parents) is part of its cost, as it is for a user.
Writes ``bench/results/workflows.json`` and ``.md``.
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
from streamjobs import Producer, Step, chain, group
from streamjobs.counts import server_ms, type_stats
from streamjobs.keys import TypeKeys

TYPE = "noop"
RESULTS = Path(__file__).resolve().parent / "results"


async def _completed(p: Producer, n: int, limit_s: float = 120.0) -> int:
    """Wait until ``n`` jobs of the type completed; the server ms of the last."""
    tk = TypeKeys("sj", TYPE)
    deadline = time.monotonic() + limit_s
    while (await type_stats(p.redis, tk)).completed < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} jobs not completed within {limit_s:.0f} s")
        await asyncio.sleep(0.005)
    return server_ms(await p.redis.time())


async def _one(url: str, shape: str, n: int) -> dict[str, float]:
    async with Producer(url) as p:
        t0 = server_ms(await p.redis.time())
        if shape == "independent":
            await p.enqueue_many(TYPE, [None] * n)
            jobs = n
        elif shape == "group":
            await p.workflow(group([Step(TYPE) for _ in range(n)], then=Step(TYPE)))
            jobs = n + 1
        else:
            await p.workflow(chain(*(Step(TYPE) for _ in range(n))))
            jobs = n
        enqueued = server_ms(await p.redis.time())
        end = await _completed(p, jobs)
    seconds = (end - t0) / 1000
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds,
            "enqueue_s": (enqueued - t0) / 1000, "ms_per_job": seconds * 1000 / jobs}


def _worker(url: str) -> subprocess.Popen[bytes]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": url, "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "streamjobs", "worker", "bench.handlers_noop",
                             "--concurrency", "32"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run(n: int, chain_n: int, rounds: int) -> dict[str, dict[str, object]]:
    shapes = {"independent": n, "group": n, "chain": chain_n}
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in shapes}
    for r in range(rounds):
        for shape, count in shapes.items():
            with fresh_server(f"workflows-{shape}-{r}") as url:
                worker = _worker(url)
                try:
                    time.sleep(1.0)  # the worker is up and blocked in its read
                    res = asyncio.run(_one(url, shape, count))
                finally:
                    stop_process(worker, 15)
            runs[shape].append(res)
            print(f"round {r + 1} {shape:<12} {res['jobs']:>6} jobs {res['seconds']:7.2f} s "
                  f"{res['jobs_per_s']:9.1f} jobs/s {res['ms_per_job']:7.2f} ms/job "
                  f"(enqueue {res['enqueue_s']:.2f} s)", flush=True)
    out: dict[str, dict[str, object]] = {}
    for shape, rs in runs.items():
        rates = [x["jobs_per_s"] for x in rs]
        per = [x["ms_per_job"] for x in rs]
        out[shape] = {"jobs": rs[0]["jobs"],
                      "jobs_per_s_median": round(statistics.median(rates), 1),
                      "jobs_per_s_runs": [round(x, 1) for x in rates],
                      "ms_per_job_median": round(statistics.median(per), 3)}
    return out


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--chain", type=int, default=100)
    a.add_argument("--rounds", type=int, default=3)
    args = a.parse_args()
    out = run(args.n, args.chain, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workflows.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["| shape | jobs | jobs/s (median) | runs | ms per job (median) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {v['jobs']} | {v['jobs_per_s_median']} | {v['jobs_per_s_runs']} | "
              f"{v['ms_per_job_median']} |" for s, v in out.items()]
    cmd = f"python -m bench.workflows --n {args.n} --chain {args.chain} --rounds {args.rounds}"
    (RESULTS / "workflows.md").write_text(
        f"# Dependencies: what they cost\n\n`{cmd}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
