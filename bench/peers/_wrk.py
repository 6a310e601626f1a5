"""HTTP enqueue load through ``streamjobs api`` with wrk (standard library only).

wrk is a closed-loop load generator in C (one connection per client, keep-alive); its Lua
``done`` hook prints the figures as one JSON line, so nothing parses its text summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import CHILDREN

#: Jobs per request in the bulk runs.
BULK_JOBS = 100
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"non_2xx":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_workers_supported(python: str, root: str) -> bool:
    out = subprocess.run([python, "-m", "streamjobs", "api", "--help"], cwd=root,
                         capture_output=True, text=True, timeout=60, check=False).stdout
    return "--workers" in out


@contextlib.contextmanager
def api_process(python: str, root: str, url: str, workers: int = 1):
    """``streamjobs api`` in its own process on a free port; yields its base URL."""
    port = _free_port()
    cmd = [python, "-m", "streamjobs", "--url", url, "api", "--host", "127.0.0.1",
           "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    CHILDREN.append(proc)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamjobs api exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > end:
                raise RuntimeError("streamjobs api did not answer /health within 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def body(bulk: bool) -> str:
    if bulk:
        return json.dumps({"jobs": [{"payload": {"i": i}} for i in range(BULK_JOBS)]})
    return json.dumps({"payload": {"i": 1}})


def run_wrk(base: str, bulk: bool, clients: int, seconds: float) -> dict:
    """One wrk run; returns req/s, jobs/s, p50/p99/max ms and the error counts."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"error": "wrk not found (Debian: apt-get install wrk)"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        script = f.name
    path = "/jobs/bench/bulk" if bulk else "/jobs/bench"
    threads = min(clients, os.cpu_count() or 1)
    cmd = [wrk, "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
           "--timeout", "5s", "-s", script, base + path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                              env=dict(os.environ, BENCH_BODY=body(bulk)), check=False)
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return {"error": f"wrk gave no result (exit {proc.returncode}): {proc.stderr[-200:]}"}
    raw = json.loads(line.removeprefix("BENCHJSON "))
    secs = raw["duration_us"] / 1e6
    jobs = BULK_JOBS if bulk else 1
    out = {
        "clients": clients, "jobs_per_request": jobs, "seconds": round(secs, 2),
        "requests": raw["requests"], "req_per_s": round(raw["requests"] / secs, 1),
        "jobs_per_s": round(raw["requests"] * jobs / secs, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3), "p99_ms": round(raw["p99_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
        "errors": {k: raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                       "non_2xx", "timeouts") if raw[k]},
    }
    if raw["non_2xx"] or raw["timeouts"] or raw["connect_errors"]:
        out["error"] = f"wrk saw errors: {out['errors']}"
    return out
