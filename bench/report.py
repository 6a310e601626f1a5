"""Results -> terminal table, Markdown, ratios (streamjobs / peer), chart, CI floors."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

SJ = "streamjobs"
# (key, workload, field, label, higher_is_better)
METRICS = (
    ("enq_p50", "enqueue_latency", "p50_ms", "enq p50 ms", False),
    ("enq_p99", "enqueue_latency", "p99_ms", "enq p99 ms", False),
    ("enq_single", "enqueue_single", "jobs_per_s", "enq single/s", True),
    ("enq_bulk", "enqueue_bulk", "jobs_per_s", "enq bulk/s", True),
    ("noop", "drain_noop", "jobs_per_s", "noop/s", True),
    ("sleep1ms", "drain_sleep1ms", "jobs_per_s", "sleep1ms/s", True),
    ("fail_once", "drain_fail_once", "jobs_per_s", "fail_once/s", True),
    ("e2e_p50", "e2e", "p50_ms", "e2e p50 ms", False),
    ("e2e_p99", "e2e", "p99_ms", "e2e p99 ms", False),
    ("noop_cmds", "drain_noop", "server.cmds_per_job", "cmds/job", False),
    ("noop_cpu", "drain_noop", "server.server_cpu_us_per_job", "srv µs/job", False),
    ("fail_cmds", "drain_fail_once", "server.cmds_per_job", "fail cmds/job", False),
)
#: Workloads that match how the engine is used: a second table, same ratios.
USAGE_METRICS = (
    ("conc_enq", "enqueue_concurrent", "jobs_per_s", "conc enq/s", True),
    ("conc_p50", "enqueue_concurrent", "p50_ms", "conc p50 ms", False),
    ("conc_p99", "enqueue_concurrent", "p99_ms", "conc p99 ms", False),
    ("io10ms", "drain_io10ms", "jobs_per_s", "io10ms c200/s", True),
    ("kb10", "drain_10kb", "jobs_per_s", "10kb/s", True),
    ("kb10_cpu", "drain_10kb", "server.server_cpu_us_per_job", "10kb srv µs/job", False),
)
#: drain_io10ms: concurrency 200 x (1 / 10 ms).
IO_IDEAL_JOBS_PER_S = 200 / 0.010
FLOOR_JOBS_PER_MIN = 1_000
FLOOR_P99_MS = 100.0
#: Quick-mode floors for the usage workloads, ~30 % of what this 2-core machine does
#: while shared (they catch a collapse, not noise).
FLOOR_CONC_JOBS_PER_S = 2_000.0
FLOOR_HTTP_REQ_PER_S = 400.0


def value(peer: dict, workload: str, field: str) -> float | None:
    res = peer.get("workloads", {}).get(workload)
    if not res or "error" in res:
        return None
    for part in field.split("."):
        res = res.get(part) if isinstance(res, dict) else None
    return res if isinstance(res, (int, float)) else None


def ratios(data: dict) -> dict:
    """streamjobs / peer for every metric measured by both in this run."""
    sj = data["peers"].get(SJ)
    if not sj:
        return {}
    out: dict = {}
    for name, peer in data["peers"].items():
        if name == SJ:
            continue
        row = {}
        for key, w, f, _label, _hib in METRICS + USAGE_METRICS:
            a, b = value(sj, w, f), value(peer, w, f)
            row[key] = float(f"{a / b:.3g}") if a is not None and b else None
        out[name] = row
    return out


def check_floors(data: dict) -> list[str]:
    """CI floors for streamjobs (quick mode). A missing measurement is a failure too."""
    sj = data["peers"].get(SJ)
    if not sj:
        return ["streamjobs was not run"]
    fails = []
    for w in ("drain_noop", "drain_sleep1ms", "drain_fail_once"):
        jpm = value(sj, w, "jobs_per_min")
        if jpm is None:
            fails.append(f"{w}: no measurement ({_err(sj, w)})")
        elif jpm < FLOOR_JOBS_PER_MIN:
            fails.append(f"{w}: {jpm} jobs/min per worker process < {FLOOR_JOBS_PER_MIN}")
    for w, res in sj.get("workloads", {}).items():
        if w.startswith("scaling_") and "error" not in res:
            per = res.get("jobs_per_s_per_process")
            if per is not None and per * 60 < FLOOR_JOBS_PER_MIN:
                fails.append(f"{w}: {per * 60:.0f} jobs/min per process < {FLOOR_JOBS_PER_MIN}")
    p99 = value(sj, "enqueue_latency", "p99_ms")
    if p99 is None:
        fails.append(f"enqueue_latency: no measurement ({_err(sj, 'enqueue_latency')})")
    elif p99 >= FLOOR_P99_MS:
        fails.append(f"enqueue_latency: p99 {p99} ms >= {FLOOR_P99_MS} ms")
    return fails + _usage_floors(sj)


def _usage_floors(sj: dict) -> list[str]:
    """Floors for the usage workloads the quick run includes (a workload not run is not
    checked: `--workloads` subsets stay usable)."""
    fails = []
    runs = sj.get("workloads", {})
    if "enqueue_concurrent" in runs:
        jps = value(sj, "enqueue_concurrent", "jobs_per_s")
        if jps is None:
            fails.append(f"enqueue_concurrent: no measurement ({_err(sj, 'enqueue_concurrent')})")
        elif jps < FLOOR_CONC_JOBS_PER_S:
            fails.append(f"enqueue_concurrent: {jps} jobs/s < {FLOOR_CONC_JOBS_PER_S:.0f}")
    if "http_enqueue" in runs:
        rps = value(sj, "http_enqueue", "req_per_s")
        if rps is None:
            fails.append(f"http_enqueue: no measurement ({_err(sj, 'http_enqueue')})")
        elif rps < FLOOR_HTTP_REQ_PER_S:
            fails.append(f"http_enqueue: {rps} req/s (50 clients) < {FLOOR_HTTP_REQ_PER_S:.0f}")
    return fails


def _err(peer: dict, w: str) -> str:
    res = peer.get("workloads", {}).get(w)
    return (res or {}).get("error", "not run")[:120]


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.2g}"


def _rows(data: dict, metrics: tuple = METRICS) -> tuple[list[str], list[list[str]]]:
    head = ["peer", "version"] + [m[3] for m in metrics]
    rows = []
    for name, peer in data["peers"].items():
        if peer.get("status") == "failed" and not peer.get("workloads"):
            rows.append([name, "-", f"FAILED: {peer.get('error', '')}"[:60]]
                        + [""] * (len(metrics) - 1))
            continue
        cells = []
        for _k, w, f, _l, _h in metrics:
            v = value(peer, w, f)
            cells.append(fmt(v) if v is not None or w not in peer["workloads"] else "ERR")
        rows.append([name, str(peer.get("version", "?"))[:24]] + cells)
    return head, rows


def _ratio_rows(data: dict, metrics: tuple = METRICS) -> tuple[list[str], list[list[str]]]:
    head = ["streamjobs ÷"] + [m[3] for m in metrics]
    rows = [[peer] + [fmt(r.get(m[0])) for m in metrics]
            for peer, r in data.get("ratios", {}).items()]
    return head, rows


def _has_usage(data: dict) -> bool:
    return any(w in peer.get("workloads", {}) for peer in data["peers"].values()
               for _k, w, _f, _l, _h in USAGE_METRICS)


def _derived(data: dict) -> list[str]:
    """Per peer: I/O-bound drain as % of ideal, 10 KB drain ÷ small-payload drain."""
    lines = []
    for name, peer in data["peers"].items():
        bits = []
        io = value(peer, "drain_io10ms", "jobs_per_s")
        if io is not None:
            bits.append(f"I/O-bound (10 ms, c=200) {io / IO_IDEAL_JOBS_PER_S:.0%} of ideal 20k/s")
        kb, small = value(peer, "drain_10kb", "jobs_per_s"), value(peer, "drain_noop",
                                                                    "jobs_per_s")
        if kb is not None and small:
            bits.append(f"10 KB drain = {kb / small:.2f} x small-payload drain")
        if bits:
            lines.append(f"{name}: " + "; ".join(bits))
    return lines


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    line = "  ".join(h.rjust(w) if i > 1 else h.ljust(w)
                     for i, (h, w) in enumerate(zip(head, widths, strict=False)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    return "\n".join(out)


def _extras(data: dict) -> list[str]:
    """Scaling and memory lines (streamjobs)."""
    sj = data["peers"].get(SJ)
    if not sj:
        return []
    lines = []
    scal = [(w, r) for w, r in sj["workloads"].items() if w.startswith("scaling_")]
    if scal:
        parts = []
        for w, r in scal:
            k = w.split("_")[1]
            parts.append(f"{k} proc: {r['error']}" if "error" in r else
                         f"{k} proc: {fmt(r['jobs_per_s'])} jobs/s "
                         f"({fmt(r['jobs_per_s_per_process'])}/proc)")
        lines.append(f"scaling (machine cores: {data['meta']['cpu_count']}): " + "; ".join(parts))
    lines += _sj_usage_lines(sj)
    for w in ("drain_noop", "memory_1m"):
        mem = (sj["workloads"].get(w) or {}).get("memory")
        if mem:
            n = sj["workloads"][w].get("n")
            lines.append(
                f"memory ({w}, n={n:,}): baseline {mem['baseline_bytes']:,} B, "
                f"{mem['bytes_per_waiting_job']} B per waiting job, after drain "
                f"{mem['after_drain_bytes']:,} B ({mem['after_minus_baseline_bytes']:+,} B "
                "vs baseline)")
    return lines


def _sj_usage_lines(sj: dict) -> list[str]:
    """CLI-worker drain, many types, HTTP enqueue (streamjobs only)."""
    runs, lines = sj["workloads"], []
    cli = runs.get("drain_cli")
    if cli:
        lines.append("drain, CLI worker process (`python -m streamjobs worker`): " + (
            cli["error"] if "error" in cli else
            f"{fmt(cli['jobs_per_s'])} jobs/s from first completion, "
            f"{fmt(cli['jobs_per_s_from_spawn'])} jobs/s from spawn "
            f"(start-up {cli['startup_s']} s)"))
    mt = runs.get("many_types")
    if mt and "drain" in mt:
        idle, sparse, dr = mt["pickup_idle"], mt["pickup_sparse"], mt["drain"]
        lines.append(
            f"many types ({mt['types']} on one worker): drain {fmt(dr.get('jobs_per_s'))} "
            f"jobs/s; pickup idle p50/p99 {fmt(idle.get('p50_ms'))}/"
            f"{fmt(idle.get('p99_ms'))} ms; sparse 2 jobs/s p50/p99 "
            f"{fmt(sparse.get('p50_ms'))}/{fmt(sparse.get('p99_ms'))} ms")
    elif mt:
        lines.append(f"many types: {mt.get('error')}")
    http = runs.get("http_enqueue")
    if http:
        lines += _http_lines(http)
    return lines


def _http_lines(http: dict) -> list[str]:
    if "runs" not in http:
        return [f"HTTP enqueue: {http.get('error')}"]
    parts = []
    for name, r in http["runs"].items():
        if "req_per_s" not in r:
            parts.append(f"{name}: {r.get('error')}")
            continue
        jobs = f" = {fmt(r['jobs_per_s'])} jobs/s" if r["jobs_per_request"] > 1 else ""
        parts.append(f"{name} {fmt(r['req_per_s'])} req/s{jobs} p50/p99 "
                     f"{fmt(r['p50_ms'])}/{fmt(r['p99_ms'])} ms")
    out = ["HTTP enqueue (`streamjobs api`, 1 process, wrk): " + "; ".join(parts)]
    if http.get("note"):
        out.append(f"HTTP enqueue: {http['note']}")
    return out


def table(data: dict) -> str:
    head, rows = _rows(data)
    parts = [_text_table(head, rows)]
    if data.get("ratios"):
        parts += ["", "ratios streamjobs ÷ peer (throughput: >1 = streamjobs faster; "
                  "latency/cost: <1 = streamjobs better)", _text_table(*_ratio_rows(data))]
    if _has_usage(data):
        parts += ["", "usage workloads", _text_table(*_rows(data, USAGE_METRICS))]
        if data.get("ratios"):
            parts += ["", _text_table(*_ratio_rows(data, USAGE_METRICS))]
        parts += _derived(data)
    parts += [""] + _extras(data)
    errs = [f"{p}/{w}: {r['error']}" for p, peer in data["peers"].items()
            for w, r in peer.get("workloads", {}).items() if "error" in r]
    errs += [f"{p}: {peer['error']}" for p, peer in data["peers"].items()
             if peer.get("error")]
    if errs:
        parts += ["", "errors:"] + [f"  {e[:300]}" for e in errs]
    return "\n".join(parts)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def markdown(data: dict) -> str:
    m = data["meta"]
    p = m["params"]
    md = [
        f"# streamjobs bench ({m['mode']})", "",
        f"{m['started']} · {m['machine']} · Python {m['python']} · {m['server']} · "
        f"commit {m['commit'] or '?'}", "",
        f"Every (peer, workload) ran against a fresh private server. n={p['n']:,} "
        f"(enqueue_latency: {p['n_latency']:,}); e2e {p['rate']:.0f} jobs/s for "
        f"{p['duration_s']:.0f} s; one worker process per drain. cmds/job and srv µs/job "
        "are from INFO commandstats / INFO cpu around enqueue + drain of drain_noop "
        "(fail cmds/job: drain_fail_once).", "",
        "## Results", "", md_table(*_rows(data)), "",
    ]
    if data.get("ratios"):
        md += ["## Ratios (streamjobs ÷ peer, same run)", "",
               "Throughput columns: > 1 means streamjobs is faster. Latency and cost "
               "columns: < 1 means streamjobs is lower (better).", "",
               md_table(*_ratio_rows(data)), ""]
    if _has_usage(data):
        md += ["## Usage workloads", "",
               "Concurrent enqueue: 100 callers each awaiting its own single enqueue. "
               "io10ms: handler awaits 10 ms, worker concurrency 200. 10kb: 10 KB payloads.",
               "", md_table(*_rows(data, USAGE_METRICS)), ""]
        if data.get("ratios"):
            md += [md_table(*_ratio_rows(data, USAGE_METRICS)), ""]
        md += [f"- {x}" for x in _derived(data)] + [""]
    extras = _extras(data)
    if extras:
        md += ["## streamjobs: CLI worker, many types, HTTP, scaling and memory", ""]
        md += [f"- {x}" for x in extras] + [""]
    md += ["## Peer configuration and measuring method", ""]
    for name, peer in data["peers"].items():
        md.append(f"- **{name}** {peer.get('version', '')}: {peer.get('config', '')}")
        methods = sorted({v for v in peer.get("methods", {}).values() if v})
        for meth in methods:
            md.append(f"  - method: {meth}")
        bulk = (peer.get("workloads", {}).get("enqueue_bulk") or {}).get("bulk")
        if bulk:
            md.append(f"  - bulk: {bulk}")
    errs = [(p, w, r["error"]) for p, peer in data["peers"].items()
            for w, r in peer.get("workloads", {}).items() if "error" in r]
    errs += [(p, "-", peer["error"]) for p, peer in data["peers"].items() if peer.get("error")]
    if errs:
        md += ["", "## Failures", ""] + [f"- {p} / {w}: `{e[:300]}`" for p, w, e in errs]
    return "\n".join(md) + "\n"


def chart(data: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    peers = list(data["peers"])
    fig, axes = plt.subplots(3, 2, figsize=(15, 13))
    panels = (
        (axes[0][0], "drain, one worker process (jobs/s, log)",
         (("drain_noop", "jobs_per_s", "noop"), ("drain_sleep1ms", "jobs_per_s", "sleep 1 ms"),
          ("drain_fail_once", "jobs_per_s", "fail once"))),
        (axes[0][1], "enqueue (jobs/s, log)",
         (("enqueue_single", "jobs_per_s", "single"), ("enqueue_bulk", "jobs_per_s", "bulk"))),
        (axes[1][0], "latency (ms, log; lower is better)",
         (("enqueue_latency", "p99_ms", "enqueue p99"), ("e2e", "p50_ms", "e2e p50"),
          ("e2e", "p99_ms", "e2e p99"))),
        (axes[1][1], "server cost per job, drain_noop (log; lower is better)",
         (("drain_noop", "server.cmds_per_job", "commands"),
          ("drain_noop", "server.server_cpu_us_per_job", "server CPU µs"))),
        (axes[2][0], "usage workloads (jobs/s, log)",
         (("enqueue_concurrent", "jobs_per_s", "enqueue, 100 in flight"),
          ("drain_io10ms", "jobs_per_s", "drain, 10 ms I/O, c=200"),
          ("drain_10kb", "jobs_per_s", "drain, 10 KB payloads"))),
        (axes[2][1], "enqueue, 100 in flight: latency (ms, log; lower is better)",
         (("enqueue_concurrent", "p50_ms", "p50"), ("enqueue_concurrent", "p99_ms", "p99"))),
    )
    for ax, title, series in panels:
        width = 0.8 / len(series)
        drawn = False
        for i, (w, f, label) in enumerate(series):
            vals = [value(data["peers"][p], w, f) or 0 for p in peers]
            xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(peers))]
            ax.bar(xs, vals, width, label=label)
            drawn = drawn or any(vals)
        if drawn:  # a subset run leaves some panels empty: no log scale to warn about
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(range(len(peers)), peers, rotation=30, ha="right")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    m = data["meta"]
    fig.suptitle(f"streamjobs vs peers ({m['mode']}, {m['machine']}, {m['server']}; "
                 "missing bar = failed or not measured)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
