"""OpenTelemetry traces (platform §12.4): one server span per request, W3C propagation.

Each runtime owns a ``TracerProvider``; spans are exported over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. An inbound ``traceparent`` is honoured, and the
active span's ids are bound to every log line as ``trace_id`` / ``span_id``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaicommon.middleware import route_template

_PROPAGATOR = TraceContextTextMapPropagator()


def build_tracer_provider(
    module: str, version: str, *, processor: SpanProcessor | None = None
) -> TracerProvider:
    """A provider for one service; OTLP export when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    name = os.environ.get("OTEL_SERVICE_NAME") or module
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.version": version})
    )
    if processor is not None:
        provider.add_span_processor(processor)
    elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def inject_trace_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add ``traceparent`` (and ``tracestate``) of the current span to outbound headers."""
    _PROPAGATOR.inject(headers)
    return headers


def bind_span_to_logs(span: trace.Span) -> None:
    """Put the span's ``trace_id`` and ``span_id`` on every log line of this context."""
    ctx = span.get_span_context()
    if ctx.is_valid:
        structlog.contextvars.bind_contextvars(
            trace_id=format(ctx.trace_id, "032x"), span_id=format(ctx.span_id, "016x")
        )


class TracingMiddleware:
    """Opens the server span of every HTTP request and WebSocket session."""

    def __init__(self, app: ASGIApp, provider: TracerProvider, module: str) -> None:
        self.app = app
        self.tracer = provider.get_tracer(f"scaicommon.{module}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        parent = _PROPAGATOR.extract(carrier)
        method = scope.get("method", "WS")
        status = 0

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        token = otel_context.attach(parent)
        try:
            with self.tracer.start_as_current_span(
                f"{method} {scope['path']}", kind=SpanKind.SERVER
            ) as span:
                bind_span_to_logs(span)
                try:
                    await self.app(scope, receive, tracking_send)
                finally:
                    route = route_template(scope)
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.request.method", method)
                    if status:
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(Status(StatusCode.ERROR))
        finally:
            otel_context.detach(token)
