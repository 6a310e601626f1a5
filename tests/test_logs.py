"""Per-job log lines, their levels and formats, and redaction."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from streamjobs import Job, PermanentError, Producer, Registry, Worker
from streamjobs.logs import JOBS, JsonFormatter, LogConfig, RedactFilter, redact, setup
from tests.helpers import ROOT, running, wait_for

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def _job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == JOBS]


async def test_one_line_per_attempt_at_its_level(redis_url: str, type_name: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry()

    @reg.handler(type_name, max_attempts=2, immediate_retries=1, backoff_base=0.01)
    async def h(job: Job) -> None:
        if job.payload == "boom":
            raise RuntimeError("boom")
        if job.payload == "never":
            raise PermanentError("never")

    caplog.set_level(logging.DEBUG, logger=JOBS)
    async with Producer(redis_url) as p:
        await p.enqueue(type_name, "fine", job_id="ok-1")
        await p.enqueue(type_name, "boom", job_id="boom-1")
        await p.enqueue(type_name, "never", job_id="never-1")
        async with running(Worker(redis_url, reg)):
            async def settled() -> bool:
                dead = [r for r in _job_records(caplog) if r.levelno == logging.ERROR]
                return len(dead) == 2
            await wait_for(settled)
    by = {(r.job_id, r.levelname, r.getMessage().split()[0])  # type: ignore[attr-defined]
          for r in _job_records(caplog)}
    assert ("ok-1", "DEBUG", "started") in by and ("ok-1", "INFO", "completed") in by
    assert ("boom-1", "WARNING", "failed") in by and ("boom-1", "ERROR", "dead") in by
    assert ("never-1", "WARNING", "failed") in by and ("never-1", "ERROR", "dead") in by
    done = next(r for r in _job_records(caplog) if r.getMessage().startswith("completed"))
    assert done.job_type == type_name and done.attempt == 1  # type: ignore[attr-defined]
    assert done.duration_ms >= 0  # type: ignore[attr-defined]
    failed = [r for r in _job_records(caplog) if r.job_id == "boom-1"  # type: ignore[attr-defined]
              and r.levelno == logging.WARNING]
    assert [r.attempt for r in failed] == [1, 2]  # type: ignore[attr-defined]
    dead = next(r for r in _job_records(caplog) if r.job_id == "boom-1"  # type: ignore[attr-defined]
                and r.levelno == logging.ERROR)
    assert dead.attempt == 2 and "boom" in dead.getMessage()  # type: ignore[attr-defined]


def test_default_level_hides_completed_jobs_and_v_shows_them() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger(JOBS).level)
    try:
        setup(LogConfig(verbosity=0))
        assert not logging.getLogger(JOBS).isEnabledFor(logging.INFO)
        assert logging.getLogger(JOBS).isEnabledFor(logging.WARNING)
        setup(LogConfig(verbosity=1))
        assert logging.getLogger(JOBS).isEnabledFor(logging.INFO)
        assert not logging.getLogger(JOBS).isEnabledFor(logging.DEBUG)
        setup(LogConfig(verbosity=2))
        assert logging.getLogger(JOBS).isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], _, jobs_level = saved
        root.setLevel(saved[1])
        logging.getLogger(JOBS).setLevel(jobs_level)


def test_json_lines_carry_job_fields_and_no_credentials() -> None:
    record = logging.LogRecord(JOBS, logging.INFO, __file__, 1,
                               "completed %s via %s", ("j-1", "redis://u:pw@h:1/0"), None)
    record.job_id, record.attempt, record.duration_ms = "j-1", 1, 2.5
    RedactFilter().filter(record)
    out = orjson.loads(JsonFormatter().format(record))
    assert out["message"] == "completed j-1 via redis://u:***@h:1/0"
    assert out["level"] == "INFO" and out["job_id"] == "j-1" and out["duration_ms"] == 2.5
    assert redact("rediss://:pw@h:1 and unix:///tmp/s") == "rediss://:***@h:1 and unix:///tmp/s"
    assert redact("redis://token@h:1") == "redis://***@h:1"


def test_cli_log_format_json_and_v(redis_url: str, type_name: str, tmp_path: Path,
                                   procs: list[subprocess.Popen[bytes]]) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url, "SJ_TEST_TYPE": type_name,
           "PYTHONPATH": str(ROOT)}
    with (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamjobs", "-v", "--log-format",
                                 "json", "worker", "tests.workers"], cwd=ROOT, env=env,
                                stderr=err)
    procs.append(proc)
    subprocess.run([sys.executable, "-m", "streamjobs", "enqueue", type_name, "{}", "--id",
                    "j-json"], cwd=ROOT, env=env, check=True, timeout=60)
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not any(line.get("job_id") == "j-json" for line in lines):
        assert time.monotonic() < deadline, (tmp_path / "err").read_text()
        time.sleep(0.1)
        lines = [orjson.loads(x) for x in (tmp_path / "err").read_text().splitlines() if x]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    done = next(line for line in lines if line.get("job_id") == "j-json")
    assert done["level"] == "INFO" and done["message"].startswith("completed")
    assert done["job_type"] == type_name and done["attempt"] == 1
