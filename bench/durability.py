"""Cost of each durability tier of enqueue, on one machine: a primary with AOF on
(appendfsync everysec) and a replica, both from the local valkey binary.

    python -m bench.durability [--jobs 2000]

Prints, per tier (none, aof = WAITAOF 1 0, replica = WAIT 1), sequential enqueues per
second and the p50/p99 latency of one enqueue. Same machine, loopback: the shape, not
capacity (a replica on another host adds its round trip to every ``replica`` enqueue).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import redis

from streamjobs import Producer
from streamjobs.config import Settings
from streamjobs.embedded import find_server_binary, free_port

TIERS = ("none", "aof", "replica")


def _server(port: int, d: Path, *extra: str) -> subprocess.Popen[bytes]:
    d.mkdir(parents=True)
    return subprocess.Popen(
        [find_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError("servers not ready")


async def _measure(url: str, tier: str, jobs: int) -> tuple[float, float, float]:
    type_ = f"bench{uuid.uuid4().hex[:8]}"
    lat: list[float] = []
    async with Producer(url, settings=Settings(redis_url=url, durability=tier)) as p:
        await p.enqueue(type_, {"warm": 1})
        t0 = time.perf_counter()
        for i in range(jobs):
            s = time.perf_counter()
            await p.enqueue(type_, {"n": i})
            lat.append(time.perf_counter() - s)
        total = time.perf_counter() - t0
    lat.sort()
    return jobs / total, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sj-durability-") as tmp:
        pport, rport = free_port(), free_port()
        procs = [_server(pport, Path(tmp) / "p"),
                 _server(rport, Path(tmp) / "r", "--replicaof", "127.0.0.1", str(pport))]
        try:
            replica = redis.Redis(port=rport)
            _wait(lambda: replica.info("replication").get("master_link_status") == "up")
            replica.close()
            url = f"redis://127.0.0.1:{pport}/0"
            print(f"{'tier':>8} {'jobs/s':>9} {'p50 ms':>8} {'p99 ms':>8}   ({args.jobs} "
                  "sequential enqueues, AOF everysec, one replica, loopback)")
            for tier in TIERS:
                rate, p50, p99 = anyio.run(_measure, url, tier, args.jobs)
                print(f"{tier:>8} {rate:>9.0f} {p50:>8.3f} {p99:>8.3f}")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
