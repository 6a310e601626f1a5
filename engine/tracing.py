"""OpenTelemetry tracing, optional: ``pip install streamjobs[otel]`` and
``Settings.tracing`` (``STREAMJOBS_TRACING=1``).

The producer opens a span per enqueue call (kind PRODUCER) and writes the W3C
``traceparent`` (and ``tracestate`` when any) into each job's headers: ordinary headers
of the wire format, so a producer in another language joins the trace the same way. The
worker continues that trace with one span per attempt (kind CONSUMER), whose attributes
are the job's type, id, attempt and outcome: a retried job's attempts are siblings under
the enqueue span, in one trace. The handler runs inside its attempt's span (its own spans
are children of it).

Spans go to the global tracer provider (the application configures the SDK and its
exporters). With tracing off, nothing here imports OpenTelemetry and nothing is done.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streamjobs.about import version
from streamjobs.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from streamjobs.job import Job
    from streamjobs.outcomes import Result

#: The W3C Trace Context headers a job carries.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Span attribute names.
TYPE_ATTR = "streamjobs.type"
ID_ATTR = "streamjobs.job_id"
ATTEMPT_ATTR = "streamjobs.attempt"
OUTCOME_ATTR = "streamjobs.outcome"


class Tracing:
    """The tracer and propagator, imported when made (only with tracing on)."""

    def __init__(self) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError as e:
            raise ConfigError("tracing is on (STREAMJOBS_TRACING) but OpenTelemetry is not "
                              "installed: pip install 'streamjobs[otel]'") from e
        self._context, self._propagate, self._trace = context, propagate, trace
        self._tracer = trace.get_tracer("streamjobs", version())

    @contextmanager
    def enqueue(self, type_: str, headers: Mapping[str, str] | None
                ) -> Iterator[tuple[Any, dict[str, str]]]:
        """A span for one enqueue call, and ``headers`` with the trace context added."""
        with self._tracer.start_as_current_span(
            f"enqueue {type_}", kind=self._trace.SpanKind.PRODUCER,
            attributes={TYPE_ATTR: type_, "messaging.system": "streamjobs",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": type_},
        ) as span:
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
            yield span, {**(headers or {}), **carrier}

    def start(self, job: Job) -> tuple[Any, Any]:
        """Start the span of one attempt, as the current span (the handler's parent);
        end it with :meth:`end` in the same task."""
        parent = self._propagate.extract(dict(job.headers))
        span = self._tracer.start_span(
            f"process {job.type}", context=parent, kind=self._trace.SpanKind.CONSUMER,
            attributes={TYPE_ATTR: job.type, ID_ATTR: job.id, ATTEMPT_ATTR: job.attempt,
                        "messaging.system": "streamjobs",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": job.type},
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end(self, started: tuple[Any, Any], outcome: Result) -> None:
        span, token = started
        span.set_attribute(OUTCOME_ATTR, outcome.kind.value)
        if outcome.error:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               outcome.error[:200]))
        span.end()
        self._context.detach(token)
