"""``python -m bench --headline``: the headline figures, streamjobs and BullMQ interleaved
(A B A B A B), each on a fresh server; median and spread (min-max) of the rounds per figure,
and the ratio of the medians. Writes ``headline.json`` and ``headline.md``."""

from __future__ import annotations

import json
import statistics
import time
from typing import TYPE_CHECKING

from bench import report
from bench.run import (
    WORKLOAD_ARGS,
    Plan,
    ensure_wrk,
    interpreter,
    meta,
    run_workload,
    show,
    sj_extra_args,
)

if TYPE_CHECKING:
    from pathlib import Path

#: (workload for streamjobs, workload for BullMQ or None) in the order each round runs them.
PAIRS = (
    ("drain_cli", "drain_noop"),
    ("enqueue_concurrent", "enqueue_concurrent"),
    ("enqueue_bulk", "enqueue_bulk"),
    ("e2e", "e2e"),
    ("http_enqueue", None),
)
#: (label, streamjobs (workload, field), BullMQ (workload, field) or None, higher is better)
FIGURES = (
    ("drain no-op, one worker process (jobs/s)", ("drain_cli", "jobs_per_s"),
     ("drain_noop", "jobs_per_s"), True),
    ("  same, counted from worker spawn (jobs/s)", ("drain_cli", "jobs_per_s_from_spawn"),
     None, True),
    ("  server CPU per drained job (µs)", ("drain_cli", "server.server_cpu_us_per_job"),
     ("drain_noop", "server.server_cpu_us_per_job"), False),
    ("concurrent enqueue, 100 in flight (jobs/s)", ("enqueue_concurrent", "jobs_per_s"),
     ("enqueue_concurrent", "jobs_per_s"), True),
    ("  concurrent enqueue p99 (ms)", ("enqueue_concurrent", "p99_ms"),
     ("enqueue_concurrent", "p99_ms"), False),
    ("bulk enqueue (jobs/s)", ("enqueue_bulk", "jobs_per_s"), ("enqueue_bulk", "jobs_per_s"),
     True),
    ("e2e at 500 jobs/s p50 (ms)", ("e2e", "p50_ms"), ("e2e", "p50_ms"), False),
    ("e2e at 500 jobs/s p99 (ms)", ("e2e", "p99_ms"), ("e2e", "p99_ms"), False),
    ("HTTP enqueue, 50 clients (req/s)", ("http_enqueue", "runs.single_c50.req_per_s"), None,
     True),
    ("  HTTP enqueue, 50 clients p99 (ms)", ("http_enqueue", "runs.single_c50.p99_ms"), None,
     False),
    ("  HTTP bulk enqueue, 50 clients (jobs/s)", ("http_enqueue", "runs.bulk_c50.jobs_per_s"),
     None, True),
)
ROUNDS = 3


def _one(peer: str, cmd: list[str], workload: str, plan: Plan) -> dict:
    extra = [*WORKLOAD_ARGS.get(workload, []), *sj_extra_args(workload, plan)]
    if workload == "http_enqueue" and (err := ensure_wrk()):
        return {"error": err}
    res = run_workload(peer, cmd, workload, plan.n_for(workload), plan, extra=extra)
    show(peer, workload, res)
    return res


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def summarise(rounds: list[dict]) -> list[dict]:
    rows = []
    for label, (sw, sf), bull, hib in FIGURES:
        sj = _stats([v for r in rounds
                     if (v := report.value(r["streamjobs"], sw, sf)) is not None])
        bm = None
        if bull is not None:
            bm = _stats([v for r in rounds
                         if (v := report.value(r.get("bullmq", {}), *bull)) is not None])
        ratio = (sj["median"] / bm["median"]) if sj and bm and bm["median"] else None
        rows.append({"figure": label, "streamjobs": sj, "bullmq": bm, "higher_is_better": hib,
                     "ratio_of_medians": round(ratio, 3) if ratio else None})
    return rows


def _cell(st: dict | None) -> str:
    if not st:
        return "-"
    f = report.fmt
    return f"{f(st['median'])} ({f(st['min'])}–{f(st['max'])})"


def markdown(data: dict) -> str:
    m = data["meta"]
    head = ["figure", "streamjobs median (min–max)", "BullMQ median (min–max)",
            "streamjobs ÷ BullMQ (medians)"]
    rows = [[r["figure"], _cell(r["streamjobs"]), _cell(r["bullmq"]),
             report.fmt(r["ratio_of_medians"])] for r in data["figures"]]
    return "\n".join([
        f"# streamjobs headline ({m['mode']}, {ROUNDS} interleaved rounds)", "",
        f"{m['started']} · {m['machine']} · Python {m['python']} · {m['server']} · "
        f"commit {m['commit'] or '?'} · load average at start {m['load_avg_at_start']} · "
        f"{m.get('wall_s', '?')} s", "",
        "Each round runs every workload for streamjobs then for BullMQ (A B A B A B), each "
        "on a fresh server. streamjobs' drain uses `python -m streamjobs worker` in its own "
        "process; BullMQ's its in-process Worker (a node process). HTTP has no BullMQ "
        "counterpart. Ratios: throughput > 1 = streamjobs faster; latency < 1 = lower.", "",
        report.md_table(head, rows), "",
        f"Reproduce: `{data['command']}`", "",
    ])


def run_headline(plan: Plan, out_dir: Path, command: str) -> int:
    data: dict = {"meta": meta(plan), "command": command, "rounds": []}
    data["meta"]["mode"] = "headline" + (" (quick)" if plan.quick else "")
    peers = {}
    for peer in ("streamjobs", "bullmq"):
        cmd, err = interpreter(peer)
        if cmd is None:
            print(f"{peer}: {err}")
            if peer == "streamjobs":
                return 1
        else:
            peers[peer] = cmd
    t0 = time.perf_counter()
    for k in range(ROUNDS):
        print(f"== round {k + 1}/{ROUNDS}", flush=True)
        rnd: dict = {p: {"workloads": {}} for p in peers}
        for sw, bw in PAIRS:
            rnd["streamjobs"]["workloads"][sw] = _one("streamjobs", peers["streamjobs"], sw,
                                                      plan)
            if bw and "bullmq" in peers:
                rnd["bullmq"]["workloads"][bw] = _one("bullmq", peers["bullmq"], bw, plan)
        data["rounds"].append(rnd)
    data["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    data["figures"] = summarise(data["rounds"])
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "headline-quick" if plan.quick else "headline"
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2))
    md = markdown(data)
    (out_dir / f"{name}.md").write_text(md)
    print()
    print(md)
    print(f"wrote {out_dir / name}.json, {name}.md")
    return 0
