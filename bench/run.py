"""Orchestrator: one fresh server per (peer, workload), one driver subprocess each.

Peers are never dependencies of the engine: each Python peer gets its own virtualenv
under ``bench/.venvs/<peer>`` (pins in ``bench/peers/requirements/<peer>.txt``); BullMQ
runs under node when node and npm are on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.server import WORK, fresh_server, server_binary_version, server_cost, snapshot

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_DIR = BENCH / "peers"
VENVS = BENCH / ".venvs"
LOGS = WORK / "logs"
PY_PEERS = ("arq", "rq", "saq", "streaq", "taskiq", "celery", "dramatiq", "huey")
ALL_PEERS = ("streamjobs", *PY_PEERS, "bullmq")
WORKLOADS = ("enqueue_latency", "enqueue_single", "enqueue_bulk", "enqueue_concurrent",
             "drain_noop", "drain_sleep1ms", "drain_fail_once", "drain_io10ms", "drain_10kb",
             "e2e")
DRAINS = ("drain_noop", "drain_sleep1ms", "drain_fail_once", "drain_io10ms", "drain_10kb")
#: streamjobs-only workloads, run after the shared ones.
EXTRAS = frozenset({"scaling", "memory", "drain_cli", "many_types", "http_enqueue"})
#: Shared workloads that only some peers run (the rest have no comparable mode, or are
#: far behind on it and would only lengthen the run); every other workload: every peer.
WORKLOAD_PEERS = {
    "enqueue_concurrent": ("streamjobs", "arq", "taskiq", "dramatiq", "huey", "bullmq"),
    "drain_io10ms": ("streamjobs", "arq", "saq", "streaq", "taskiq", "bullmq"),
}
#: many_types: fewer slots than types, where a fetch window once left types unread.
MANY_TYPES_CONCURRENCY = 4
#: Extra driver arguments per workload.
WORKLOAD_ARGS = {"drain_io10ms": ["--concurrency", "200"]}
DRIVER_TIMEOUT = 300.0


@dataclass
class Plan:
    quick: bool
    peers: tuple[str, ...]
    workloads: tuple[str, ...]
    n_latency: int = 2_000
    n: int = 20_000
    rate: float = 500.0
    duration: float = 10.0
    scaling_n: int = 20_000
    scaling_workers: tuple[int, ...] = (1, 2, 4)
    memory_n: int = 0  # 0: no big memory run
    #: streamjobs-only workloads besides scaling and memory, in run order.
    sj_extras: tuple[str, ...] = ()
    http_seconds: float = 10.0
    pickups: int = 50
    #: Every workload on a local 6-node cluster (streamjobs only): the shape, not capacity.
    cluster: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool, peers: tuple[str, ...] | None,
             workloads: tuple[str, ...] | None) -> Plan:
        # streamjobs' own extras (scaling, the 1M memory run) go with the whole suite,
        # or when named: a --workloads subset runs just what it names.
        if workloads is None:
            extras = set(EXTRAS) - ({"drain_cli", "many_types"} if quick else set())
        else:
            extras = set(workloads) & EXTRAS
        scaling = (1, 2, 4) if "scaling" in extras else ()
        shared = tuple(w for w in workloads or WORKLOADS if w not in EXTRAS)
        sj_extras = tuple(w for w in ("drain_cli", "many_types", "http_enqueue") if w in extras)
        if quick:
            return cls(True, peers or ("streamjobs",), shared, n=2_000, duration=3.0,
                       scaling_n=5_000, scaling_workers=scaling, sj_extras=sj_extras,
                       http_seconds=1.0, pickups=10)
        return cls(False, peers or ALL_PEERS, shared, scaling_workers=scaling,
                   memory_n=1_000_000 if "memory" in extras else 0, sj_extras=sj_extras)

    def n_for(self, workload: str) -> int:
        return self.n_latency if workload == "enqueue_latency" else self.n


# ---- peer environments ------------------------------------------------------------------


def _stamp(req: Path) -> str:
    return hashlib.sha256(req.read_bytes()).hexdigest()[:16]


def ensure_python_peer(peer: str) -> tuple[list[str] | None, str | None]:
    """Create/refresh ``bench/.venvs/<peer>``; return (interpreter cmd, error)."""
    req = PEERS_DIR / "requirements" / f"{peer}.txt"
    venv = VENVS / peer
    py = venv / "bin" / "python"
    stamp = venv / ".bench-stamp"
    want = _stamp(req)
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return [str(py)], None
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    print(f"  installing {peer} into {venv.relative_to(ROOT)} ...", flush=True)
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(req)],
                       check=True, capture_output=True, text=True, timeout=900)
    except subprocess.CalledProcessError as e:
        tail = ((e.stderr or "") + (e.stdout or "")).strip().splitlines()[-3:]
        return None, f"install failed: {' | '.join(tail) or e}"
    except subprocess.TimeoutExpired:
        return None, "install timed out"
    stamp.write_text(want)
    return [str(py)], None


def ensure_bullmq() -> tuple[list[str] | None, str | None]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return None, "skipped: node/npm not on PATH"
    d = PEERS_DIR / "bullmq"
    if not (d / "package.json").exists() or not (d / "bench.mjs").exists():
        return None, "bench/peers/bullmq/{package.json,bench.mjs} missing"
    stamp = d / "node_modules" / ".bench-stamp"
    want = _stamp(d / "package.json")
    if not (stamp.exists() and stamp.read_text() == want):
        print("  npm install in bench/peers/bullmq ...", flush=True)
        try:
            subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=d, check=True,
                           capture_output=True, text=True, timeout=600)
        except subprocess.CalledProcessError as e:
            return None, f"npm install failed: {(e.stderr or '').strip()[-300:]}"
        except subprocess.TimeoutExpired:
            return None, "npm install timed out"
        stamp.write_text(want)
    return [node, str(d / "bench.mjs")], None


def ensure_wrk() -> str | None:
    """wrk (the HTTP load generator) on PATH: installed with apt-get when missing and this
    process is root on a Debian-like system; otherwise an error that says how."""
    if shutil.which("wrk"):
        return None
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return ("wrk not found: install it (Debian/Ubuntu: `sudo apt-get install wrk`) "
                "to measure HTTP enqueue")
    print("  installing wrk with apt-get ...", flush=True)
    try:
        subprocess.run([apt, "install", "-y", "-q", "wrk"], check=True, capture_output=True,
                       text=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    except subprocess.CalledProcessError as e:
        return f"apt-get install wrk failed: {(e.stderr or '').strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return "apt-get install wrk timed out"
    return None if shutil.which("wrk") else "wrk still not on PATH after apt-get install"


def interpreter(peer: str) -> tuple[list[str] | None, str | None]:
    if peer == "streamjobs":
        # Not streamjobs.py: run as a script, it would shadow the package it measures.
        return [sys.executable, str(PEERS_DIR / "streamjobs_peer.py")], None
    if peer == "bullmq":
        return ensure_bullmq()
    cmd, err = ensure_python_peer(peer)
    return (cmd + [str(PEERS_DIR / f"{peer}.py")] if cmd else None), err


# ---- one driver run ----------------------------------------------------------------------


def run_driver(cmd: list[str], url: str, workload: str, n: int, plan: Plan,
               extra: list[str] | None = None, timeout: float = DRIVER_TIMEOUT,
               log_name: str = "") -> dict:
    argv = [*cmd, "--url", url, "--workload", workload, "--n", str(n),
            "--rate", str(plan.rate), "--duration", str(plan.duration), *(extra or [])]
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name or workload}.log"
    env = dict(os.environ, BENCH_DRIVER_DEADLINE=str(max(timeout - 20, 30)))
    t = time.perf_counter()
    with log_path.open("w") as err:
        try:
            proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                  text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timeout: driver killed after {timeout:.0f}s"}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    try:
        res = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        res = {}
    if not isinstance(res, dict) or not res:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        res = {"error": f"no JSON result (exit {proc.returncode}): {' | '.join(tail)[-400:]}"}
    res["driver_wall_s"] = round(wall, 2)
    return res


def run_workload(peer: str, cmd: list[str], workload: str, n: int, plan: Plan,
                 extra: list[str] | None = None, timeout: float = DRIVER_TIMEOUT,
                 key: str = "") -> dict:
    """Fresh server, INFO snapshot, driver, INFO snapshot -> result with server cost."""
    with fresh_server(f"{peer}-{workload}", cluster=plan.cluster) as url:
        before = snapshot(url)
        res = run_driver(cmd, url, workload, n, plan, extra, timeout,
                         log_name=f"{peer}-{key or workload}")
        after = snapshot(url)
    if workload in DRAINS or workload in ("memory", "scaling", "drain_cli"):
        res["server"] = server_cost(before, after, n)
    return res


def show(peer: str, key: str, res: dict) -> None:
    if "error" in res:
        print(f"    {key:<18} ERROR {res['error'][:160]}", flush=True)
        return
    bits = []
    for k in ("req_per_s", "jobs_per_s", "p50_ms", "p99_ms", "max_ms"):
        if res.get(k) is not None:
            bits.append(f"{k}={res[k]}")
    srv = res.get("server") or {}
    if srv.get("cmds_per_job") is not None:
        bits.append(f"cmds/job={srv['cmds_per_job']} cpu_us/job={srv['server_cpu_us_per_job']}")
    print(f"    {key:<18} {' '.join(bits)}", flush=True)


def run_peer(peer: str, plan: Plan) -> dict:
    print(f"== {peer}", flush=True)
    cmd, err = interpreter(peer)
    if cmd is None:
        print(f"    FAILED: {err}", flush=True)
        return {"status": "failed", "error": err, "workloads": {}}
    out: dict = {"status": "ok", "workloads": {}}
    for w in plan.workloads:
        if peer not in WORKLOAD_PEERS.get(w, (peer,)):
            continue
        res = run_workload(peer, cmd, w, plan.n_for(w), plan, extra=WORKLOAD_ARGS.get(w))
        out["workloads"][w] = res
        show(peer, w, res)
        _keep_meta(out, w, res)
    if peer == "streamjobs":
        _streamjobs_extras(cmd, plan, out)
    errors = [w for w, r in out["workloads"].items() if "error" in r]
    if errors:
        out["status"] = "partial" if len(errors) < len(out["workloads"]) else "failed"
    return out


def sj_extra_args(workload: str, plan: Plan) -> list[str]:
    if workload == "http_enqueue":
        return ["--duration", str(plan.http_seconds)]
    if workload == "many_types":  # the shape: 50 types, concurrency 4
        return ["--pickups", str(plan.pickups), "--concurrency", str(MANY_TYPES_CONCURRENCY)]
    return []


def _keep_meta(out: dict, workload: str, res: dict) -> None:
    """The peer's version and config from its first result that has them; every method."""
    for k in ("version", "config"):
        if res.get(k) and not out.get(k):
            out[k] = res[k]
    out.setdefault("methods", {})[workload] = res.get("method", "")


def _streamjobs_extras(cmd: list[str], plan: Plan, out: dict) -> None:
    for w in plan.sj_extras:
        if w == "http_enqueue":
            err = ensure_wrk()
            if err:
                out["workloads"][w] = {"error": err}
                show("streamjobs", w, out["workloads"][w])
                continue
        res = run_workload("streamjobs", cmd, w, plan.n, plan, extra=sj_extra_args(w, plan))
        out["workloads"][w] = res
        show("streamjobs", w, res)
        _keep_meta(out, w, res)
    for k in plan.scaling_workers:
        key = f"scaling_{k}"
        res = run_workload("streamjobs", cmd, "scaling", plan.scaling_n, plan,
                           extra=["--workers", str(k)], key=key)
        res["config"] = f"{k} x `python -m streamjobs worker bench.handlers_noop --concurrency 100`"
        out["workloads"][key] = res
        show("streamjobs", key, res)
    if plan.memory_n:
        res = run_workload("streamjobs", cmd, "memory", plan.memory_n, plan,
                           timeout=1200, key="memory_1m")
        out["workloads"]["memory_1m"] = res
        show("streamjobs", "memory_1m", res)


def meta(plan: Plan) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "mode": "quick" if plan.quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "server": server_binary_version() + (", 6-node cluster" if plan.cluster else ""),
        "commit": commit,
        "params": {"n": plan.n, "n_latency": plan.n_latency, "rate": plan.rate,
                   "duration_s": plan.duration, "scaling_n": plan.scaling_n,
                   "memory_n": plan.memory_n, "http_seconds": plan.http_seconds,
                   "pickups": plan.pickups},
    }


def run(plan: Plan, out_dir: Path) -> int:
    data = {"meta": meta(plan), "peers": {}}
    print(f"streamjobs bench ({data['meta']['mode']}): {data['meta']['machine']}, "
          f"{data['meta']['server']}", flush=True)
    for peer in plan.peers:
        data["peers"][peer] = run_peer(peer, plan)
    data["ratios"] = report.ratios(data)
    failures = report.check_floors(data) if plan.quick else []
    data["floors"] = {"ok": not failures, "failures": failures}
    out_dir.mkdir(parents=True, exist_ok=True)
    print()
    print(report.table(data))
    if plan.quick:
        (out_dir / "quick.json").write_text(json.dumps(data, indent=2))
        print(f"\nwrote {out_dir / 'quick.json'}")
    else:
        (out_dir / "results.json").write_text(json.dumps(data, indent=2))
        (out_dir / "results.md").write_text(report.markdown(data))
        chart = report.chart(data, out_dir / "chart.png")
        print(f"\nwrote {out_dir}/results.json, results.md" + (", chart.png" if chart else
              " (no chart: matplotlib missing)"))
    for f in failures:
        print(f"FLOOR FAILED: {f}")
    return 1 if failures else 0


def rerender(out_dir: Path) -> int:
    """Recompute ratios and rewrite results.md / chart.png from an existing results.json."""
    path = out_dir / "results.json"
    data = json.loads(path.read_text())
    data["ratios"] = report.ratios(data)
    path.write_text(json.dumps(data, indent=2))
    (out_dir / "results.md").write_text(report.markdown(data))
    report.chart(data, out_dir / "chart.png")
    print(report.table(data))
    return 0
