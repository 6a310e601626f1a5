"""OpenTelemetry: a trace from the enqueue through every attempt (SDK in-memory exporter)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamjobs import JobState, Policy, Producer, Registry, Settings, Worker
from streamjobs.tracing import ATTEMPT_ATTR, ID_ATTR, OUTCOME_ATTR, TRACEPARENT, TYPE_ATTR
from tests.helpers import FAST, ROOT, example_run, running, wait_state

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.trace import ReadableSpan

    from streamjobs.job import Job

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()


def _provider() -> None:
    """The global provider is set once per process: ours, or the one found, with our
    exporter added."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
        current = trace.get_tracer_provider()
    assert isinstance(current, TracerProvider)
    current.add_span_processor(SimpleSpanProcessor(_EXPORTER))


_provider()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _of(exporter: InMemorySpanExporter, type_name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if (s.attributes or {}).get(TYPE_ATTR) == type_name]


async def test_one_trace_from_enqueue_through_each_attempt(
        redis_url: str, type_name: str, spans: InMemorySpanExporter) -> None:
    settings = Settings(redis_url=redis_url, tracing=True)
    reg = Registry()
    seen: list[Any] = []

    @reg.handler(type_name, max_attempts=3, **FAST)
    async def flaky(job: Job) -> str:
        seen.append((job.headers.get(TRACEPARENT), trace.get_current_span()))
        if job.attempt < 2:
            raise RuntimeError("first attempt fails")
        with trace.get_tracer("app").start_as_current_span("inside"):
            return "ok"

    async with Producer(redis_url, settings=settings) as p:
        async with running(Worker(redis_url, reg, settings=settings, block_ms=100)):
            job_id = await p.enqueue(type_name, {"x": 1})
            await wait_state(p, type_name, job_id, JobState.COMPLETED)

    found = _of(spans, type_name)
    (enqueue,) = [s for s in found if s.kind is SpanKind.PRODUCER]
    attempts = sorted((s for s in found if s.kind is SpanKind.CONSUMER),
                      key=lambda s: s.attributes[ATTEMPT_ATTR])  # type: ignore[index]
    assert [s.attributes[ATTEMPT_ATTR] for s in attempts] == [1, 2]  # type: ignore[index]
    assert [s.attributes[OUTCOME_ATTR] for s in attempts] == ["retry", "ok"]  # type: ignore[index]
    trace_id = enqueue.context.trace_id
    for s in attempts:
        assert s.context.trace_id == trace_id
        assert s.parent is not None and s.parent.span_id == enqueue.context.span_id
        assert s.attributes[ID_ATTR] == job_id  # type: ignore[index]
    assert enqueue.attributes[ID_ATTR] == job_id  # type: ignore[index]
    assert attempts[0].status.status_code is trace.StatusCode.ERROR
    # Both attempts carried the enqueue span's traceparent; the handler ran in its span.
    assert {tp.rpartition("-")[0] for tp, _ in seen} == {
        f"00-{trace_id:032x}-{enqueue.context.span_id:016x}"}
    (inside,) = [s for s in spans.get_finished_spans() if s.name == "inside"]
    assert inside.parent is not None and inside.parent.span_id == attempts[1].context.span_id


async def test_batches_share_one_span(redis_url: str, type_name: str,
                                      spans: InMemorySpanExporter) -> None:
    settings = Settings(redis_url=redis_url, tracing=True)
    reg = Registry()
    reg.handler(type_name)(lambda job: None)
    async with Producer(redis_url, settings=settings) as p:
        ids = await p.enqueue_many(type_name, [1, 2, 3])
        async with running(Worker(redis_url, reg, settings=settings, block_ms=100,
                                  concurrency=1)):
            for i in ids:
                await wait_state(p, type_name, i, JobState.COMPLETED)
    found = _of(spans, type_name)
    (enqueue,) = [s for s in found if s.kind is SpanKind.PRODUCER]
    attempts = [s for s in found if s.kind is SpanKind.CONSUMER]
    assert sorted(s.attributes[ID_ATTR] for s in attempts) == sorted(ids)  # type: ignore[index]
    assert {s.parent.span_id for s in attempts if s.parent} == {enqueue.context.span_id}


async def test_tracing_off_costs_nothing(redis_url: str, type_name: str,
                                         spans: InMemorySpanExporter) -> None:
    reg = Registry()
    reg.handler(type_name, policy=Policy())(lambda job: dict(job.headers))
    settings = Settings(redis_url=redis_url)
    async with Producer(redis_url, settings=settings) as p:
        job_id = await p.enqueue(type_name, 1)
        async with running(Worker(redis_url, reg, settings=settings, block_ms=100)):
            await wait_state(p, type_name, job_id, JobState.COMPLETED)
        st = await p.status(type_name, job_id)
    assert st is not None and st.result == {}  # no traceparent header
    assert _of(spans, type_name) == []


def test_without_opentelemetry_installed() -> None:
    """The packages absent (imports of them fail): tracing off works, tracing on says
    what to install."""
    code = ("import sys\n"
            "sys.modules['opentelemetry'] = None  # import opentelemetry raises ImportError\n"
            "from streamjobs import Producer, Settings, Worker, Registry\n"
            "from streamjobs.errors import ConfigError\n"
            "reg = Registry(); reg.handler('t')(lambda job: None)\n"
            "Producer('redis://127.0.0.1:1', settings=Settings())\n"
            "Worker('redis://127.0.0.1:1', reg, settings=Settings())\n"
            "try:\n"
            "    Producer('redis://127.0.0.1:1', settings=Settings(tracing=True))\n"
            "except ConfigError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "pip install 'streamjobs[otel]'" in out.stdout


def test_tracing_example_runs(redis_url: str) -> None:
    with example_run(redis_url, "tracing.py", "render_pdf") as res:
        assert res.returncode == 0, res.stderr
        rows = [line.split() for line in res.stdout.splitlines()]
        names = [" ".join(row[4:]) for row in rows]
        assert names == ["http request", "enqueue render_pdf", "process render_pdf",
                         "draw pages"], res.stdout
        assert len({row[0] for row in rows}) == 1  # one trace
        for child, parent in zip(rows[1:], rows, strict=False):
            assert child[3] == parent[1]  # each the child of the one before


def test_a_sync_producer_enqueues_under_the_callers_span(
        redis_url: str, type_name: str, spans: InMemorySpanExporter) -> None:
    from streamjobs import SyncProducer

    with SyncProducer(redis_url, settings=Settings(redis_url=redis_url, tracing=True)) as p:
        with trace.get_tracer("app").start_as_current_span("request") as request:
            job_id = p.enqueue(type_name, 1)
        st = p.status(type_name, job_id)
    (enqueue,) = _of(spans, type_name)
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert st is not None and st.headers[TRACEPARENT].split("-")[2] == (
        f"{enqueue.context.span_id:016x}")


async def test_a_workflows_steps_share_one_trace(
        redis_url: str, type_name: str, spans: InMemorySpanExporter) -> None:
    from streamjobs import Step, chain

    settings = Settings(redis_url=redis_url, tracing=True)
    reg = Registry()

    @reg.handler(type_name)
    async def step(job: Job) -> Any:
        return job.payload

    async with Producer(redis_url, settings=settings) as p:
        ids = await p.workflow(chain(Step(type_name, 1), Step(type_name, 2),
                                     Step(type_name, 3)))
        async with running(Worker(redis_url, reg, settings=settings, block_ms=100)):
            await wait_state(p, type_name, ids["step2"], JobState.COMPLETED)
    found = _of(spans, type_name)
    assert len([s for s in found if s.kind is SpanKind.CONSUMER]) == 3
    assert len({s.context.trace_id for s in found}) == 1  # enqueues and attempts: one trace
    (root,) = [s for s in spans.get_finished_spans() if s.name == "enqueue workflow"]
    assert all(s.context.trace_id == root.context.trace_id for s in found)
