"""Metrics: queue figures read at scrape time move as jobs flow; worker metrics, one
process and N processes behind one endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamjobs import DeadLetters, Job, Producer, Registry, Settings, Worker
from streamjobs.api import create_app
from streamjobs.collector import QueueCollector, sync_client
from streamjobs.connection import client_from_url
from streamjobs.embedded import free_port
from streamjobs.keys import TypeKeys
from streamjobs.metrics import WorkerMetrics
from streamjobs.scripts import Scripts
from tests.helpers import FAST, ROOT, poll, running, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path



def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of an exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(redis_url, Settings(redis_url=redis_url))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://api"
    ) as client:
        yield client


async def scrape(api: httpx.AsyncClient) -> str:
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


@pytest.mark.anyio
async def test_queue_figures_follow_the_jobs(
    api: httpx.AsyncClient, redis_url: str, type_name: str
) -> None:
    t = type_name
    jobs = [{"payload": i} for i in range(4)] + [{"payload": "later", "delay": 60},
                                                   {"payload": 4, "priority": "high"}]
    assert (await api.post(f"/jobs/{t}/bulk", json={"jobs": jobs})).status_code == 201
    await api.post(f"/jobs/{t}", json={"payload": "boom", "id": "doomed"})
    await anyio.sleep(0.05)
    text = await scrape(api)
    assert sample(text, "streamjobs_queue_waiting", type=t) == 6
    assert sample(text, "streamjobs_queue_waiting_by_priority", type=t, priority="high") == 1
    assert sample(text, "streamjobs_queue_waiting_by_priority", type=t, priority="normal") == 5
    assert sample(text, "streamjobs_queue_waiting_by_priority", type=t, priority="low") == 0
    assert sample(text, "streamjobs_queue_delayed", type=t) == 1
    assert sample(text, "streamjobs_queue_running", type=t) == 0
    assert sample(text, "streamjobs_queue_dead", type=t) == 0
    assert sample(text, "streamjobs_queue_completed_total", type=t) == 0
    assert sample(text, "streamjobs_queue_enqueued_total", type=t) == 7
    assert (sample(text, "streamjobs_queue_oldest_waiting_age_seconds", type=t) or 0) >= 0.04
    assert sample(text, "streamjobs_enqueue_duration_seconds_count", type=t) == 2
    assert sample(text, "streamjobs_scrape_error") == 0

    reg = Registry()

    @reg.handler(t, max_attempts=1, **FAST)
    async def h(job: Job) -> Any:
        if job.payload == "boom":
            raise RuntimeError("boom")
        return job.payload

    async with running(Worker(redis_url, reg, concurrency=4, block_ms=100)):
        async def drained() -> bool:
            text = await scrape(api)
            return sample(text, "streamjobs_queue_completed_total", type=t) == 5 and \
                sample(text, "streamjobs_queue_dead", type=t) == 1

        await wait_for(drained, 10)
    text = await scrape(api)
    assert sample(text, "streamjobs_queue_waiting", type=t) == 0
    assert sample(text, "streamjobs_queue_running", type=t) == 0
    assert sample(text, "streamjobs_queue_delayed", type=t) == 1
    assert sample(text, "streamjobs_queue_oldest_waiting_age_seconds", type=t) == 0
    assert sample(text, "streamjobs_queue_dead_lettered_total", type=t) == 1


@pytest.mark.anyio
async def test_cancelled_expired_and_deduplicated_are_counted(
    api: httpx.AsyncClient, redis_url: str, type_name: str
) -> None:
    t = type_name
    body = {"payload": 1, "dedup_key": "k", "delay": 60}
    first = (await api.post(f"/jobs/{t}", json=body)).json()["id"]
    await api.post(f"/jobs/{t}", json=body)                       # deduplicated
    assert (await api.delete(f"/jobs/{t}/{first}")).status_code == 200  # cancelled
    await api.post(f"/jobs/{t}", json={"payload": 2, "delay": 0.05, "expires_in": 0.01})
    await anyio.sleep(0.1)
    client = client_from_url(redis_url)
    try:
        await Scripts(client).promote(TypeKeys("sj", t))  # expires it
    finally:
        await client.aclose()
    text = await scrape(api)
    assert sample(text, "streamjobs_queue_deduplicated_total", type=t) == 1
    assert sample(text, "streamjobs_queue_cancelled_total", type=t) == 1
    assert sample(text, "streamjobs_queue_expired_total", type=t) == 1
    types = {x["type"]: x for x in (await api.get("/types")).json()["types"]}
    assert (types[t]["cancelled"], types[t]["expired"], types[t]["deduplicated"]) == (1, 1, 1)


@pytest.mark.anyio
async def test_collector_from_async_client(r: Any, type_name: str) -> None:
    """The sync client the collector builds from an asyncio one reads the same server."""
    async with Producer(r) as p:
        await p.enqueue(type_name, 1)
    client = sync_client(r)
    registry = CollectorRegistry()
    collector = QueueCollector(client)
    registry.register(collector)
    try:
        text = (await anyio.to_thread.run_sync(generate_latest, registry)).decode()
    finally:
        collector.close()
    assert sample(text, "streamjobs_queue_waiting", type=type_name) == 1


def test_collector_reports_a_down_server_instead_of_raising() -> None:
    collector = QueueCollector(sync_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5))
    registry = CollectorRegistry()
    registry.register(collector)  # registering reads nothing
    try:
        t0 = time.monotonic()
        text = generate_latest(registry).decode()
        assert time.monotonic() - t0 < 5
    finally:
        collector.close()
    assert sample(text, "streamjobs_scrape_error") == 1
    assert sample(text, "streamjobs_queue_waiting") is None


def test_worker_metrics_describe() -> None:
    m = WorkerMetrics()
    m.describe(["a", "b"], 8)
    text = generate_latest(m.registry).decode()
    assert sample(text, "streamjobs_worker_info") == 1
    assert sample(text, "streamjobs_worker_concurrency", type="b") == 8


@pytest.mark.anyio
async def test_worker_metrics_count_outcomes(redis_url: str, type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name, max_attempts=2, immediate_retries=1, **FAST)
    async def h(job: Job) -> Any:
        if job.payload == "bad":
            raise RuntimeError("bad")
        return None

    metrics = WorkerMetrics()
    async with Producer(redis_url) as p:
        for payload in (1, 2, "bad"):
            await p.enqueue(type_name, payload)
        async with running(Worker(redis_url, reg, metrics=metrics, block_ms=100)):
            async def done() -> bool:
                text = generate_latest(metrics.registry).decode()
                return sample(text, "streamjobs_jobs_total", type=type_name,
                              outcome="dead") == 1 and sample(
                    text, "streamjobs_jobs_total", type=type_name, outcome="completed") == 2

            await wait_for(done, 10)
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "streamjobs_jobs_total", type=type_name, outcome="retried") == 1
    assert sample(text, "streamjobs_attempt_duration_seconds_count", type=type_name,
                  outcome="ok") == 2
    assert sample(text, "streamjobs_queue_wait_seconds_count", type=type_name) == 4
    assert sample(text, "streamjobs_jobs_in_flight", type=type_name) == 0


@pytest.mark.anyio
async def test_a_timeout_counts_once_in_jobs_total(redis_url: str, type_name: str) -> None:
    """Two attempts that both run over their time limit: two timeouts, not also a retry
    and a dead job (each settled attempt has one outcome label)."""
    reg = Registry()

    @reg.handler(type_name, max_attempts=2, immediate_retries=1, **{**FAST, "timeout": 0.05})
    async def h(job: Job) -> None:
        await anyio.sleep(5)

    metrics = WorkerMetrics()
    async with Producer(redis_url) as p:
        await p.enqueue(type_name, 1)
        async with running(Worker(redis_url, reg, metrics=metrics, block_ms=100)):
            async def settled() -> bool:
                text = generate_latest(metrics.registry).decode()
                return sample(text, "streamjobs_jobs_total", type=type_name,
                              outcome="timeout") == 2

            await wait_for(settled, 10)
        (job,), _ = await DeadLetters(p.redis).list(type_name)
    assert job.reason == "attempts exhausted"
    text = generate_latest(metrics.registry).decode()
    for outcome in ("retried", "dead"):
        assert sample(text, "streamjobs_jobs_total", type=type_name, outcome=outcome) in (None, 0)


def _scrape_url(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


@pytest.mark.slow
def test_processes_share_one_metrics_endpoint(
    redis_url: str, type_name: str, tmp_path: Path
) -> None:
    """`streamjobs worker --processes 2 --metrics-port P`: one endpoint sums both."""
    (tmp_path / "mp_handlers.py").write_text(textwrap.dedent(f"""
        from streamjobs import handler

        @handler({type_name!r})
        async def h(job):
            return job.payload
    """))
    port = free_port()
    env = {**os.environ, "STREAMJOBS_REDIS_URL": redis_url,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamjobs", "worker", "mp_handlers", "--processes", "2",
         "--concurrency", "3", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        def workers_up() -> bool:
            text = _scrape_url(url)
            return text is not None and sample(text, "streamjobs_worker_info") == 2

        poll(workers_up, 15)
        text = _scrape_url(url) or ""
        assert sample(text, "streamjobs_worker_concurrency", type=type_name) == 6

        async def enqueue() -> None:
            async with Producer(redis_url) as p:
                await p.enqueue_many(type_name, range(10))

        anyio.run(enqueue)

        def all_done() -> bool:
            text = _scrape_url(url) or ""
            return sample(text, "streamjobs_jobs_total", type=type_name,
                          outcome="completed") == 10

        poll(all_done, 15)
        text = _scrape_url(url) or ""
        assert sample(text, "streamjobs_attempt_duration_seconds_count", type=type_name,
                      outcome="ok") == 10
    finally:
        proc.send_signal(2)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
