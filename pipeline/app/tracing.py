"""OpenTelemetry set up for a process: the SDK, the OTLP/HTTP exporter, and the Celery,
SQLAlchemy and Redis instrumentations (the ``otel`` extra).

Nothing is traced unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
the exporter reads the standard ``OTEL_*`` variables itself. Celery pool processes each set
tracing up after the fork (:func:`trace_pool_processes`): the SDK's export thread does not
survive one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.tracing import tracing_active

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy import Engine

SQL_TRACER = "opentelemetry.instrumentation.sqlalchemy"
ROUTINE_SPANS = frozenset({"run/ecobatch.route"})
"""Celery's span of the beat's routing pass: never the root of a trace."""
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """True when an OTLP endpoint is configured."""
    env = os.environ if environ is None else environ
    return any(env.get(v) for v in ENDPOINT_VARS)


def setup_tracing(service: str, exporter: SpanExporter | None = None, *,
                  simple: bool = False) -> TracerProvider:
    """Install a tracer provider exporting to ``exporter`` (default: OTLP over HTTP) and
    instrument Celery, SQLAlchemy engines made from now on, and Redis.

    Args:
        service: the ``service.name`` of this process's spans.
        exporter: where spans go; None is the OTLP/HTTP exporter configured by ``OTEL_*``.
        simple: export each span as it ends (tests) instead of in batches.

    Raises:
        ConfigError: the ``otel`` extra is not installed.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as e:
        raise ConfigError("tracing needs the otel extra: pip install 'ecobatch[otel]'") from e
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=_quiet_routine_sampler())
    exporter = exporter or _otlp_exporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter) if simple
                                else BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument(provider)
    return provider


def _quiet_routine_sampler() -> Any:
    """Sample everything but a trace that would start at the beat's routing pass (four a
    second, mostly idle): the batches of a pass still join their prompts' traces, as their
    spans have those as parents."""
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
    )

    class QuietRoutine(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          *args: Any, **kwargs: Any) -> SamplingResult:
            if name in ROUTINE_SPANS:
                return SamplingResult(Decision.DROP)
            return ALWAYS_ON.should_sample(parent_context, trace_id, name, *args, **kwargs)

        def get_description(self) -> str:
            return "QuietRoutine"

    return ParentBased(root=QuietRoutine())


def _otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument(provider: Any) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (CeleryInstrumentor(), RedisInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)


def trace_engine(engine: Engine) -> Engine:
    """Trace the SQL of ``engine`` (with the SQLAlchemy instrumentation's engine tracer) when
    this process traces; return it.

    Engines are instrumented one by one because the instrumentor's global set-up cannot
    reach them: ecobatch makes them through sqlmodel, which holds its own reference to
    ``create_engine``, and that set-up also wraps ``sqlalchemy.ext.asyncio``, which needs
    greenlet (not a dependency), and refuses SQLAlchemy 2.1 by its declared range.
    """
    if not tracing_active():
        return engine
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    usage = metrics.get_meter(SQL_TRACER).create_up_down_counter(
        "db.client.connections.usage", unit="connections")
    EngineTracer(trace.get_tracer(SQL_TRACER), engine, usage)
    return engine


def trace_pool_processes(service: str) -> None:
    """Set tracing up in each pool process a Celery worker forks, if an endpoint is set;
    flush its spans when the process ends."""
    if not tracing_wanted():
        return
    from celery.signals import worker_process_init, worker_process_shutdown

    providers: list[TracerProvider] = []

    def start(**_: object) -> None:
        providers.append(setup_tracing(service))

    def flush(**_: object) -> None:
        for provider in providers:
            provider.shutdown()

    worker_process_init.connect(start, weak=False)
    worker_process_shutdown.connect(flush, weak=False)


@contextmanager
def traced(service: str) -> Iterator[None]:
    """Trace a short-lived command (``submit``, ``run``) if an endpoint is set; flush at
    the end."""
    provider = setup_tracing(service) if tracing_wanted() else None
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()
