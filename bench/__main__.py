"""``python -m bench`` (full: streamjobs + every peer) or ``python -m bench --quick`` (CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.run import ALL_PEERS, EXTRAS, WORKLOADS, Plan, rerender, run


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="CI: streamjobs only, small counts, floors enforced, quick.json")
    ap.add_argument("--peers", type=_csv, default=None,
                    help=f"comma-separated subset of: {','.join(ALL_PEERS)}")
    ap.add_argument("--workloads", type=_csv, default=None,
                    help=f"comma-separated subset of: {','.join([*WORKLOADS, *sorted(EXTRAS)])}")
    ap.add_argument("--n", type=int, default=None, help="override jobs per workload")
    ap.add_argument("--no-memory-run", action="store_true",
                    help="full mode: skip the 1,000,000-job memory run")
    ap.add_argument("--headline", action="store_true",
                    help="headline figures, streamjobs and BullMQ interleaved x3: median and "
                         "spread (with --quick: small counts, headline-quick.*)")
    ap.add_argument("--rerender", action="store_true",
                    help="rebuild ratios, results.md and chart.png from results.json (no runs)")
    ap.add_argument("--cluster", action="store_true",
                    help="streamjobs on a local 6-node cluster (3 primaries + 3 replicas) "
                         "instead of one server; results in results/cluster/")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    bad = [p for p in a.peers or () if p not in ALL_PEERS]
    bad += [w for w in a.workloads or () if w not in WORKLOADS and w not in EXTRAS]
    if bad:
        ap.error(f"unknown peer/workload: {', '.join(bad)}")
    if a.cluster and set(a.peers or ("streamjobs",)) != {"streamjobs"}:
        ap.error("--cluster runs streamjobs alone (the peers take one server)")
    results = Path(__file__).resolve().parent / "results"
    out = a.out or (results / "cluster" if a.cluster else results)
    if a.rerender:
        return rerender(out)
    plan = Plan.make(a.quick, a.peers or (("streamjobs",) if a.cluster else None), a.workloads)
    plan.cluster = a.cluster
    if a.n:
        plan.n = a.n
    if a.headline:
        from bench.headline import run_headline

        return run_headline(plan, out, "python -m bench " + " ".join(argv or sys.argv[1:]))
    if a.no_memory_run:
        plan.memory_n = 0
    return run(plan, out)


if __name__ == "__main__":
    sys.exit(main())
