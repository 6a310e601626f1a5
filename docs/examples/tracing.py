# docs/examples/tracing.py — needs `pip install 'streamjobs[otel]'`; run with:
# python docs/examples/tracing.py
import asyncio
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamjobs import Job, Producer, Registry, Settings, Worker

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
exporter = InMemorySpanExporter()  # in production: an OTLP exporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
settings = Settings(redis_url=URL, tracing=True)  # or STREAMJOBS_TRACING=1
reg = Registry()


@reg.handler("render_pdf")
async def render(job: Job) -> None:
    with trace.get_tracer("app").start_as_current_span("draw pages"):
        await asyncio.sleep(0.01)


async def main() -> None:
    async with Producer(URL, settings=settings) as p:
        worker = Worker(URL, reg, settings=settings)
        task = asyncio.create_task(worker.run())
        with trace.get_tracer("app").start_as_current_span("http request"):
            await p.enqueue("render_pdf", {"doc": 1})  # carries the traceparent header
        await asyncio.sleep(1)
        worker.stop()
        await task
    for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent else 0
        print(f"{span.context.trace_id:032x} {span.context.span_id:016x} "
              f"parent {parent:016x} {span.name}")


asyncio.run(main())
