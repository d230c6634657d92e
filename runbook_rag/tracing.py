"""OpenTelemetry traces of queries, model calls and service requests, when asked for.

Tracing is on when OpenTelemetry is installed and either the application has set a tracer
provider of its own (``opentelemetry.trace.set_tracer_provider``) or the standard environment
variables ask for export: ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``; ``none`` turns it
off), or an ``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``. In that case
runbook-rag sets up the SDK's provider itself with a batch exporter (OTLP over gRPC or HTTP,
as ``OTEL_EXPORTER_OTLP_PROTOCOL`` says) and the resource of ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. Otherwise nothing of OpenTelemetry is imported by this module
and every span is a no-op.

Spans: one per search, ask, eval query or section (``runbook_rag <action>``) and per service
request (``<METHOD> <route>``), with children ``retrieve``, ``prompt``, ``chat <model>`` (the
model call, with the GenAI semantic conventions: ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.response.finish_reasons``) and
``validate``. A span names the principal by user id only (``enduser.id``), never its groups;
the query, masked by the redactor, only where ``RUNBOOK_RAG_AUDIT_KEEP_QUERY_TEXT`` keeps it
in the audit trail; never a passage's or an answer's text. A failed span records the error's
type, not its message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

_EXPORT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_lock = threading.Lock()
_state: dict[str, Any] = {"provider": None, "checked_env": False}


class _NoSpan:
    """What a span is when tracing is off: every call does nothing."""

    def set_attribute(self, key: str, value: object) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        pass


NO_SPAN = _NoSpan()


def use_tracer_provider(provider: Any) -> None:
    """Trace through ``provider`` (an SDK ``TracerProvider``), whatever the global one is;
    None goes back to the global provider or the environment."""
    with _lock:
        _state["provider"] = provider


def _tracer() -> Any:
    """The tracer to use, or None when tracing is off."""
    provider = _state["provider"]
    if provider is None:
        provider = _configured_provider()
    if provider is None:
        return None
    return provider.get_tracer("runbook_rag")


def _configured_provider() -> Any:
    """The global provider when the application set one, or one made from the environment."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    wanted = exporter or any(os.environ.get(name) for name in _EXPORT_VARS)
    if not wanted and "opentelemetry.trace" not in sys.modules:
        return None  # not asked for, and nothing imported OpenTelemetry: stay out of its way
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current  # the application's own
    if not wanted:
        return None
    with _lock:
        if not _state["checked_env"]:
            _state["checked_env"] = True
            made = _provider_from_env(exporter or "otlp")
            if made is not None:
                trace.set_tracer_provider(made)
    current = trace.get_tracer_provider()
    return None if isinstance(current, trace.ProxyTracerProvider) else current


def _provider_from_env(exporter: str) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": "runbook-rag"}).merge(Resource.create())
    )
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        return provider
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    import importlib

    transport = "http" if protocol.startswith("http") else "grpc"
    try:
        module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{transport}.trace_exporter")
    except ImportError:
        return None  # the exporter for that protocol is not installed: no traces, nothing broken
    provider.add_span_processor(BatchSpanProcessor(module.OTLPSpanExporter()))
    return provider


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, object] | None = None, *, kind: str = "internal"
) -> Iterator[Any]:
    """A span named ``name`` (a child of the current one), or a no-op when tracing is off.

    ``kind`` is ``internal``, ``server`` or ``client``. An exception marks the span as failed
    with its type (or its ``error_type``) only, and goes on.
    """
    tracer = _tracer()
    if tracer is None:
        yield NO_SPAN
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    span_kind = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT}.get(kind, SpanKind.INTERNAL)
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer.start_as_current_span(
        name, kind=span_kind, attributes=clean, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            error = str(getattr(exc, "error_type", None) or type(exc).__name__)
            current.set_attribute("error.type", error)
            current.set_status(Status(StatusCode.ERROR, error))
            raise


def is_on() -> bool:
    """Whether spans are being recorded."""
    return _tracer() is not None
