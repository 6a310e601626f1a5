"""A producer in another language (Node, ioredis from the npm registry) follows
docs/protocol.md to the letter: plain XADD, EVALSHA of enqueue.lua, status from the job
records. The engine runs what it enqueued, and it reads what the engine wrote.

node and npm are on every machine of this project: without them the test fails, loudly."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.contract import JobState
from streamjobs.scripts import lua_dir
from tests.helpers import ROOT, running, wait_state

pytestmark = pytest.mark.anyio
HERE = ROOT / "tests" / "conformance"


@pytest.fixture(scope="module")
def node() -> str:
    exe, npm = shutil.which("node"), shutil.which("npm")
    if exe is None or npm is None:
        pytest.fail("node and npm must be on PATH: the conformance test runs a Node producer")
    modules = HERE / "node_modules" / ".package-lock.json"
    if not modules.is_file() or modules.stat().st_mtime < (HERE / "package-lock.json").stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                       timeout=300, capture_output=True)
    return exe


def run_node(node: str, *args: str) -> Any:
    res = subprocess.run([node, str(HERE / "producer.js"), *args], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


async def test_a_node_producer_follows_the_protocol(node: str, redis_url: str,
                                                    type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> dict[str, Any]:
        return {"id": job.id, "headers": dict(job.headers)}

    out = run_node(node, "enqueue", redis_url, type_name, str(lua_dir()))
    assert out["script"] == [0, "node-1", "waiting"]
    assert out["scriptAgain"] == [-2, "node-1", "waiting"]
    assert out["scriptDelayed"] == [0, "node-2", "delayed"]
    batch = out["scriptBatch"]
    assert batch[:3] == [0, "node-3", "waiting"] and batch[3::2] == [0, "waiting"]
    assert out["scriptReplayed"] == [0, "node-3", "waiting"]  # its own token: no duplicate
    anonymous = batch[4]
    plain = out["plain"]
    async with Producer(redis_url) as p:
        for job_id in (plain, "order-17", "node-1"):  # readable before any worker ran
            st = await p.status(type_name, job_id)
            assert st is not None and st.state is JobState.WAITING, job_id
        async with running(Worker(redis_url, reg)):
            for job_id in (plain, "order-17", "node-1", "node-3", anonymous):
                await wait_state(p, type_name, job_id, JobState.COMPLETED)
        st = await p.status(type_name, "order-17")
        assert st is not None and st.result == {"id": "order-17",
                                                "headers": {"traceparent": "00-4bf9-01"}}
    records = run_node(node, "status", redis_url, type_name, plain, "order-17", "node-1",
                       "node-2", "node-3", anonymous)
    assert {k: v.get("state") for k, v in records.items()} == {
        plain: "completed", "order-17": "completed", "node-1": "completed",
        "node-2": "delayed", "node-3": "completed", anonymous: "completed"}
    assert json.loads(records["node-1"]["result"]) == {"id": "node-1", "headers": {}}
    assert records["node-2"]["f:payload"] == '{"n":2}'
