"""The supervisor: crashed children come back, the rest keep serving, signals stop
children gracefully."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from streamjobs import supervisor
from streamjobs.embedded import free_port
from tests.helpers import ROOT, poll
from tests.test_embedded import read_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_restart_delays_double_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    child = supervisor.Child("w", ["true"], {})
    child.started_at = 100.0
    delays = [child.schedule_restart(100.0 + i) for i in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == supervisor.RESTART_CAP_S == delays[-1]
    child.started_at = 0.0  # ran long enough: starts from the base again
    assert child.schedule_restart(supervisor.RESTART_STABLE_S + 1) == 0.5


def test_supervisor_restarts_a_killed_child_and_leaves_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [supervisor.Child(f"c{i}", sleeper, dict(os.environ)) for i in range(2)]
    sup = supervisor.Supervisor(children)
    caplog.set_level(logging.INFO, logger="streamjobs")
    result: list[int | None] = []
    thread = threading.Thread(target=lambda: result.extend(_run_quietly(sup)))
    thread.start()
    try:
        poll(lambda: all(c.pid for c in children), 10)
        first, other = children[0].pid, children[1].pid
        os.kill(first, signal.SIGKILL)
        poll(lambda: children[0].pid not in (0, first) and children[0].poll() is None, 10)
        assert children[1].pid == other and children[1].poll() is None
        assert any("killed by SIGKILL" in r.getMessage() and "restarting in 0.5s"
                   in r.getMessage() for r in caplog.records)
    finally:
        sup._on_signal(signal.SIGTERM, None)
        thread.join(30)
    assert result == [-signal.SIGTERM, -signal.SIGTERM]  # stopped by the forwarded SIGTERM


def _run_quietly(sup: supervisor.Supervisor) -> list[int | None]:
    # signal.signal() works only in the main thread: run the loop without installing.
    for c in sup.children:
        c.start()
    sup._loop()
    return [c.poll() for c in sup.children]


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(STREAMJOBS_DATA_DIR=str(tmp_path / "data"), STREAMJOBS_EMBEDDED_PORT="0",
               PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
def up_proc() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        for pid in children_of(p.pid):
            os.kill(pid, signal.SIGKILL)
        if p.stdout:
            p.stdout.close()


def _health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
        return int(resp.status)


def test_up_restarts_a_killed_worker_while_the_others_and_the_api_serve(
    up_env: dict[str, str], up_proc: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    api_port = free_port()
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamjobs", "up", "--processes", "2", "--api-port",
             str(api_port)], cwd=ROOT, env=up_env, stdout=subprocess.PIPE, stderr=err,
            text=True, start_new_session=True)
    up_proc.append(proc)
    url = read_until(proc, r"server\s+(redis://\S+)", 60).group(1)
    ui = read_until(proc, r"ui\s+(http://\S+/ui)\s", 10).group(1)
    assert ui.endswith(f":{api_port}/ui")
    read_until(proc, r"stop\s+Ctrl-C", 10)
    # The banner's dashboard answers; / leads there.
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=5) as resp:
        assert resp.url.endswith("/ui") and b"/ui/static/app.js" in resp.read()
    workers = [p for p in children_of(proc.pid) if " worker " in cmdline(p)]
    api = [p for p in children_of(proc.pid) if " api " in cmdline(p)]
    assert len(workers) == 2 and len(api) == 1
    os.kill(workers[0], signal.SIGKILL)
    time.sleep(0.2)
    assert alive(workers[1]) and alive(api[0]) and _health(api_port) == 200

    def replaced() -> bool:
        now = [p for p in children_of(proc.pid) if " worker " in cmdline(p)]
        return len(now) == 2 and workers[0] not in now
    poll(replaced, 20)
    r = redis.Redis.from_url(url)
    entry = r.xadd("sj:{demo}:stream", {"payload": "1"}).decode()
    poll(lambda: r.hget(f"sj:{{demo}}:job:{entry}", "state") == b"completed", 20)
    r.close()
    assert "exited unexpectedly (killed by SIGKILL)" in (tmp_path / "err").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in (tmp_path / "err").read_text()


def test_one_ctrl_c_lets_every_child_finish_its_jobs(
    up_env: dict[str, str], up_proc: list[subprocess.Popen[str]], tmp_path: Path,
    redis_url: str, type_name: str,
) -> None:
    up_env.update(STREAMJOBS_REDIS_URL=redis_url, SJ_TEST_TYPE=type_name)
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamjobs", "up", "tests.workers", "--processes", "2",
             "--concurrency", "1", "--no-api"], cwd=ROOT, env=up_env,
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    up_proc.append(proc)
    read_until(proc, r"streamjobs is up", 60)
    r = redis.Redis.from_url(redis_url)
    try:
        entries = [r.xadd(f"sj:{{{type_name}}}:stream",
                          {"payload": '{"sleep": 2}', "id": f"s{i}"}).decode()
                   for i in range(2)]
        runs = f"test:{{{type_name}}}:runs"
        poll(lambda: r.hlen(runs) == 2, 30)
        # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, (tmp_path / "err").read_text()
        for i, _ in enumerate(entries):
            assert r.hget(f"sj:{{{type_name}}}:job:s{i}", "state") == b"completed"
        assert r.hgetall(runs) == {b"s0": b"1", b"s1": b"1"}
    finally:
        r.close()


def test_worker_without_a_server_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(STREAMJOBS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    err = tmp_path / "err"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "streamjobs", "worker", "handlers"],
                                cwd=ROOT, env=env, stderr=f)
    try:
        poll(lambda: "unreachable" in err.read_text(), 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_killed_up_leaves_no_server_or_worker_behind(
    up_env: dict[str, str], up_proc: list[subprocess.Popen[str]]
) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "streamjobs", "up", "--no-api"], cwd=ROOT,
                            env=up_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    up_proc.append(proc)
    url = read_until(proc, r"server\s+(redis://\S+)", 60).group(1)
    read_until(proc, r"stop\s+Ctrl-C", 10)
    r = redis.Redis.from_url(url)
    server_pid = int(r.info("server")["process_id"])
    r.close()
    workers = [p for p in children_of(proc.pid) if " worker " in cmdline(p)]
    assert workers
    proc.kill()  # no cleanup code runs in `up`
    poll(lambda: not any(alive(p) for p in [server_pid, *workers]), 20)


def test_up_with_a_worker_that_cannot_start_exits_instead_of_restarting(
    up_env: dict[str, str],
) -> None:
    res = subprocess.run([sys.executable, "-m", "streamjobs", "up", "no_such_module_xyz",
                          "--no-api"], cwd=ROOT, env=up_env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and "streamjobs is up" not in res.stdout
    assert res.stderr.count("cannot import handler module") == 1  # not restarted
    assert res.stderr.strip().splitlines()[-1] == (
        "error: worker could not start (exit code 1; see above)")
