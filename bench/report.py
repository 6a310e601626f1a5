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
FLOOR_JOBS_PER_MIN = 1_000
FLOOR_P99_MS = 100.0


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
        for key, w, f, _label, _hib in METRICS:
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
    return fails


def _err(peer: dict, w: str) -> str:
    res = peer.get("workloads", {}).get(w)
    return (res or {}).get("error", "not run")[:120]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.2g}"


def _rows(data: dict) -> tuple[list[str], list[list[str]]]:
    head = ["peer", "version"] + [m[3] for m in METRICS]
    rows = []
    for name, peer in data["peers"].items():
        if peer.get("status") == "failed" and not peer.get("workloads"):
            rows.append([name, "-", f"FAILED: {peer.get('error', '')}"[:60]]
                        + [""] * (len(METRICS) - 1))
            continue
        cells = []
        for _k, w, f, _l, _h in METRICS:
            v = value(peer, w, f)
            cells.append(_fmt(v) if v is not None or w not in peer["workloads"] else "ERR")
        rows.append([name, str(peer.get("version", "?"))[:24]] + cells)
    return head, rows


def _ratio_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    head = ["streamjobs ÷"] + [m[3] for m in METRICS]
    rows = [[peer] + [_fmt(r.get(m[0])) for m in METRICS]
            for peer, r in data.get("ratios", {}).items()]
    return head, rows


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
                         f"{k} proc: {_fmt(r['jobs_per_s'])} jobs/s "
                         f"({_fmt(r['jobs_per_s_per_process'])}/proc)")
        lines.append(f"scaling (machine cores: {data['meta']['cpu_count']}): " + "; ".join(parts))
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


def table(data: dict) -> str:
    head, rows = _rows(data)
    parts = [_text_table(head, rows)]
    if data.get("ratios"):
        parts += ["", "ratios streamjobs ÷ peer (throughput: >1 = streamjobs faster; "
                  "latency/cost: <1 = streamjobs better)", _text_table(*_ratio_rows(data))]
    parts += [""] + _extras(data)
    errs = [f"{p}/{w}: {r['error']}" for p, peer in data["peers"].items()
            for w, r in peer.get("workloads", {}).items() if "error" in r]
    errs += [f"{p}: {peer['error']}" for p, peer in data["peers"].items()
             if peer.get("error")]
    if errs:
        parts += ["", "errors:"] + [f"  {e[:300]}" for e in errs]
    return "\n".join(parts)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
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
        "## Results", "", _md_table(*_rows(data)), "",
    ]
    if data.get("ratios"):
        md += ["## Ratios (streamjobs ÷ peer, same run)", "",
               "Throughput columns: > 1 means streamjobs is faster. Latency and cost "
               "columns: < 1 means streamjobs is lower (better).", "",
               _md_table(*_ratio_rows(data)), ""]
    extras = _extras(data)
    if extras:
        md += ["## streamjobs: scaling and memory", ""] + [f"- {x}" for x in extras] + [""]
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
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
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
    )
    for ax, title, series in panels:
        width = 0.8 / len(series)
        for i, (w, f, label) in enumerate(series):
            vals = [value(data["peers"][p], w, f) or 0 for p in peers]
            xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(peers))]
            ax.bar(xs, vals, width, label=label)
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
