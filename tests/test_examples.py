"""The README's examples are real files that run, and `make up` installs what it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import redis

from streamjobs.keys import TypeKeys
from tests.helpers import ROOT

EXAMPLES = ROOT / "docs" / "examples"
TYPES = ("welcome_email", "monthly_invoice")


def _readme_blocks() -> dict[str, str]:
    """Python blocks of the README that open with ``# docs/examples/<file>``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(# (docs/examples/\S+).*?)```", text, flags=re.S)
    return {path: body for body, path in blocks}


def test_readme_shows_the_example_files_as_they_are() -> None:
    blocks = _readme_blocks()
    assert set(blocks) == {"docs/examples/jobs.py", "docs/examples/enqueue.py",
                           "docs/examples/flow.py", "docs/examples/workflow.py"}
    for path, body in blocks.items():
        assert (ROOT / path).read_text() == body, path


def test_readme_types_are_not_the_bundled_ones() -> None:
    bundled = set(re.findall(r'@handler\("([^"]+)"', "".join(
        p.read_text() for p in (ROOT / "handlers").glob("*.py"))))
    mine = set(re.findall(r'@handler\("([^"]+)"', (EXAMPLES / "jobs.py").read_text()))
    assert bundled and mine == set(TYPES) and not mine & bundled


@pytest.mark.slow
@pytest.mark.xdist_group("examples")  # the examples share their types' keys
def test_enqueue_example_runs_and_its_jobs_are_done_by_the_example_worker(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)
    for t in TYPES:
        r.delete(*(r.keys(f"sj:{{{t}}}:*") or ["-"]))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url}
    worker = subprocess.Popen([sys.executable, "-m", "streamjobs", "worker", "jobs"],
                              cwd=EXAMPLES, env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(2):  # the second run meets its own job id: DuplicateJob, handled
            res = subprocess.run([sys.executable, str(EXAMPLES / "enqueue.py")], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            assert res.stdout.splitlines()[0] == "welcome-42 delayed 100"
        done = TypeKeys("sj", "welcome_email").done
        deadline = time.monotonic() + 30
        while r.zcard(done) < 200 or r.zcard(TypeKeys("sj", "monthly_invoice").done) < 2:
            assert time.monotonic() < deadline, "the example worker did not run the jobs"
            time.sleep(0.1)
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0
        for t in TYPES:
            r.delete(*(r.keys(f"sj:{{{t}}}:*") or ["-"]))
        r.srem("sj:types", *TYPES)
        r.close()


@pytest.mark.xdist_group("examples")
def test_flow_example_runs(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url}
    try:
        res = subprocess.run([sys.executable, str(EXAMPLES / "flow.py")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["True True", "delayed True", "delayed cancelled"]
    finally:
        for t in TYPES:
            r.delete(*(r.keys(f"sj:{{{t}}}:*") or ["-"]))
        r.srem("sj:types", *TYPES)
        r.close()


def test_workflow_example_runs(redis_url: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")},
           "STREAMJOBS_REDIS_URL": redis_url}
    res = subprocess.run([sys.executable, str(EXAMPLES / "workflow.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["8", "27", "blocked 8"]


def test_make_up_installs_the_package_without_dev_extras() -> None:
    plan = subprocess.run(["make", "-n", "-B", "up"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line and " -e " in line]
    assert installs == [".venv/bin/pip install --quiet -e ."], plan
    test_plan = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60, check=True).stdout
    assert "-e '.[test,bench,lint]'" in test_plan
