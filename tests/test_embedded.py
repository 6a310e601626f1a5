"""The embedded default server and `streamjobs up`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from streamjobs.embedded import EmbeddedServer, find_server_binary, free_port
from streamjobs.errors import ServerError
from tests.helpers import ROOT


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


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
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
        url = read_until(proc, r"server\s+(redis://\S+)", 30).group(1)
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


def _up(data: Path, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(STREAMJOBS_DATA_DIR=str(data), STREAMJOBS_EMBEDDED_PORT="0")
    with (stderr or Path(os.devnull)).open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "streamjobs", "up", *args], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True)


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.slow
def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = _up(tmp_path, "--no-api")
    try:
        url = read_until(first, r"server\s+(redis://\S+)", 30).group(1)
        second = subprocess.run(
            [sys.executable, "-m", "streamjobs", "up", "--no-api"], cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
                 "STREAMJOBS_DATA_DIR": str(tmp_path), "STREAMJOBS_EMBEDDED_PORT": "0"},
            capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "streamjobs is up" not in second.stdout
        last = second.stderr.strip().splitlines()[-1]
        assert "already running" in last and str(first.pid) in last and url in last
        assert (tmp_path / "server.url").read_text().strip() == url
        r = redis.Redis.from_url(url)
        assert r.ping()
        r.close()
    finally:
        assert _stop(first) == 0


@pytest.mark.slow
def test_up_again_takes_the_same_port(tmp_path: Path) -> None:
    first = _up(tmp_path, "--no-api")
    url = read_until(first, r"server\s+(redis://\S+)", 30).group(1)
    assert _stop(first) == 0
    again = _up(tmp_path, "--no-api")
    try:
        assert read_until(again, r"server\s+(redis://\S+)", 30).group(1) == url
    finally:
        assert _stop(again) == 0


@pytest.mark.slow
def test_up_restarts_its_server_after_kill_9(tmp_path: Path) -> None:
    proc = _up(tmp_path, "--no-api", stderr=tmp_path / "err")
    try:
        url = read_until(proc, r"server\s+(redis://\S+)", 30).group(1)
        r = redis.Redis.from_url(url)
        r.set("kept", "1")
        time.sleep(1.5)  # everysec fsync
        server_pid = int(r.info("server")["process_id"])
        os.kill(server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if int(r.info("server")["process_id"]) != server_pid:
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.1)
        assert r.get("kept") == b"1"  # same port, same AOF directory
        entry = r.xadd("sj:{demo}:stream", {"payload": "2"}).decode()
        while r.hget(f"sj:{{demo}}:job:{entry}", "state") != b"completed":
            assert time.monotonic() < deadline + 20, "workers did not resume"
            time.sleep(0.05)
        r.close()
        assert "embedded server died" in (tmp_path / "err").read_text()
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0


@pytest.mark.slow
def test_up_says_up_only_once_the_api_answers(tmp_path: Path) -> None:
    api_port = free_port()
    proc = _up(tmp_path, "--api-port", str(api_port), stderr=tmp_path / "err")
    try:
        read_until(proc, r"streamjobs is up", 60)
        # No retry: by the time the banner is printed, the API answers.
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        assert _stop(proc) == 0
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err and "CancelledError" not in err
