"""Tracing (--trace-otlp): OpenTelemetry spans of inference requests, continued from a W3C `traceparent`
and sent over OTLP/HTTP.

A traced inference is one SERVER span from its door (the caller's span as parent when the request
carries a `traceparent`, as an HTTP header or gRPC metadata), with a child span per phase: decode (the
door's conversion and the data plane's check), queue (the wait for a dynamic batch), compute (the
onnxruntime run; a batch's run is shared by its requests) and encode (the answer's conversion). Each
phase is noted as monotonic stamps by the code that runs it (door, data plane, batcher) and made a span
when the request ends: a traced request costs a few stamps and its spans, an untraced one a test of a
flag at each hook; with tracing off no RPC is wrapped.

Which inferences (only inferences are traced, as in Triton): every Rth of a worker (--trace-rate R,
counted as Triton counts: the Rth, the 2Rth, ...; each worker keeps its own count), and every one whose
`traceparent` carries the sampled flag, whatever the count (such a request does not advance it).

OpenTelemetry is the optional extra forwardpass[trace], imported only when tracing is on. Each worker
sets up its own provider after the fork (a BatchSpanProcessor's thread does not survive one) and
flushes it when it stops.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from contextvars import ContextVar

from forwardpass import __version__
from forwardpass.errors import InputError

EXTRA = "forwardpass[trace]"
SERVICE = "forwardpass"  # the resource's service.name
FLUSH_MS = 5000  # at stop, how long the spans not yet sent may take to go
# Attribute names: Triton's own where it has one (its OpenTelemetry trace mode, src/tracer.cc), then
# OpenTelemetry's semantic conventions for the door (HTTP server, RPC), then ours.
MODEL_NAME, MODEL_VERSION, REQUEST_ID = "triton.model_name", "triton.model_version", "triton.request_id"
ROWS = "forwardpass.rows"  # the request's batch: Triton's spans have no such attribute


def require() -> None:
    """Fail with one line naming the extra when OpenTelemetry's SDK or OTLP/HTTP exporter is missing."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise InputError(f"--trace-otlp needs OpenTelemetry: pip install '{EXTRA}' ({exc})") from None


class Trace:
    """One traced request: its span, and the phases noted so far, made its child spans when it ends."""

    def __init__(self, tracer: Tracer, span) -> None:
        self.tracer, self.span = tracer, span
        self.trace_id = f"{span.get_span_context().trace_id:032x}"  # as traceparent writes it
        self.offset_ns = time.time_ns() - time.monotonic_ns()  # spans take wall-clock times
        self.phases: list[tuple[str, int, int]] = []  # (name, start, end) in monotonic ns
        self.decode_ns = time.monotonic_ns()  # when the door began converting the request
        self.encode_ns = 0  # when the answer was computed and its conversion began

    def add(self, name: str, start_ns: int, end_ns: int) -> None:
        """A phase that ran from start_ns to end_ns (time.monotonic_ns); from any thread."""
        self.phases.append((name, start_ns, end_ns))

    def decoding(self) -> None:
        """The door begins converting the request."""
        self.decode_ns = time.monotonic_ns()

    def checked(self, checked_ns: int, computed_ns: int) -> None:
        """The data plane checked the request at checked_ns (decode ends) and computed it by computed_ns."""
        self.add("decode", self.decode_ns, checked_ns)
        self.encode_ns = computed_ns

    def encoded(self) -> None:
        """The door has converted the answer."""
        if self.encode_ns:
            self.add("encode", self.encode_ns, time.monotonic_ns())

    def about(self, model: str, version: str | int, id: str = "", rows: int | None = None) -> None:
        """Model, version (as Triton, a number once known), request id (only when given) and rows."""
        attributes = {MODEL_NAME: model, ROWS: rows, REQUEST_ID: id or None}
        attributes[MODEL_VERSION] = int(version) if str(version).isdigit() else (version or None)
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def end(self, attributes: Mapping[str, object], failed: bool, status: str) -> None:
        """The door's answer: its attributes (the status), and whether the request failed on our side."""
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        parent = set_span_in_context(self.span)
        for name, start, end in self.phases:
            child = self.tracer.tracer.start_span(name, parent, start_time=start + self.offset_ns)
            child.end(end_time=end + self.offset_ns)
        self.span.set_attributes(attributes)
        if failed:
            self.span.set_status(Status(StatusCode.ERROR, status))
        self.span.end()


# The trace of the request being answered, while it is traced (None otherwise): its door sets it, and
# hands it on with the request's context to the thread an inference runs on.
TRACE: ContextVar[Trace | None] = ContextVar("trace", default=None)


class Tracer:
    """One worker's tracing: its provider and OTLP/HTTP exporter, its count, and the traces it begins."""

    def __init__(self, url: str, rate: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        # ALWAYS_ON: the choice is made here (begin), not by the SDK, which would follow an unsampled parent.
        resource = Resource.create({"service.name": SERVICE, "service.version": __version__})
        self.provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("forwardpass", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.rate = rate
        self.count = itertools.count(1)  # next() is atomic in CPython: the handler threads share it

    def begin(self, headers: Mapping[str, str], name: str, attributes: Mapping[str, object], access=None):
        """The request's Trace when it is traced (a sampled traceparent, or the count's turn), else None;
        the access record (--log-requests), if any, gets its trace id."""
        from opentelemetry.trace import SpanKind, get_current_span

        parent = self.propagator.extract(headers)
        caller = get_current_span(parent).get_span_context()
        if not (caller.is_valid and caller.trace_flags.sampled) and next(self.count) % self.rate:
            return None
        trace = Trace(self, self.tracer.start_span(name, parent, SpanKind.SERVER, attributes))
        if access is not None:
            access.trace_id = trace.trace_id
        return trace

    def stop(self) -> None:
        """Send the spans not yet sent (for at most FLUSH_MS), then close the exporter."""
        self.provider.force_flush(FLUSH_MS)
        self.provider.shutdown()
