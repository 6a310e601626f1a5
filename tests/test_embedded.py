"""The embedded default server and `streamjobs up`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
import redis

from streamjobs.embedded import EmbeddedServer, find_server_binary
from streamjobs.errors import ServerError
from tests.helpers import ROOT

if TYPE_CHECKING:
    from pathlib import Path


def test_embedded_server_is_private_durable_and_never_evicts(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path, port=0) as server:
        r = redis.Redis.from_url(server.url)
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert r.config_get("bind")["bind"] == "127.0.0.1"
        r.set("k", "v")
        r.close()
    assert not server.running
    with EmbeddedServer(tmp_path, port=0) as again:  # AOF brings the data back
        r = redis.Redis.from_url(again.url)
        assert r.get("k") == b"v"
        r.close()


def test_binary_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="not an executable"):
        find_server_binary(str(tmp_path / "nope"))
    assert os.access(find_server_binary(), os.X_OK)


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        m = re.search(pattern, seen)
        if m:
            return m
    raise AssertionError(f"{pattern!r} not printed; got {seen!r}")


@pytest.mark.slow
def test_up_runs_server_and_workers_and_processes_a_plain_xadd(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(STREAMJOBS_DATA_DIR=str(tmp_path), STREAMJOBS_EMBEDDED_PORT="0")
    proc = subprocess.Popen([sys.executable, "-m", "streamjobs", "up", "--no-api"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        url = _read_until(proc, r"server\s+(redis://\S+)", 30).group(1)
        assert (tmp_path / "server.url").read_text().strip() == url
        r = redis.Redis.from_url(url)
        entry = r.xadd("sj:{demo}:stream", {"payload": '{"n":1}'}).decode()
        deadline = time.monotonic() + 20
        while r.hget(f"sj:{{demo}}:job:{entry}", "state") != b"completed":
            assert time.monotonic() < deadline, "the demo worker did not complete the job"
            time.sleep(0.05)
        assert r.hget(f"sj:{{demo}}:job:{entry}", "result") == b'{"echo":{"n":1}}'
        r.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        assert not (tmp_path / "server.url").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
