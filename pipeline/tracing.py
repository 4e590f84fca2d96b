"""One OpenTelemetry trace per submission, carried across the Redis pending list.

Only the OpenTelemetry API is used here: with no tracer provider set up (the default, see
``pipeline.app.tracing``) every span is a no-op and no reference carries a trace. With one,
the submit span's context (W3C ``traceparent``) rides on each prompt reference (the ``tp``
field) through Redis to the router, whose span for a batch continues the trace of its first
prompt and links the others'; Celery's instrumentation carries it on to the worker in the
message headers. A deferred job keeps its context in Redis until the planner releases it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import redis
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from redis.exceptions import RedisError

TRACER_NAME = "ecobatch"
JOB_TRACE_KEY = "ecobatch:trace:{job_id}"
JOB_TRACE_TTL_S = 14 * 24 * 3600  # longer than any deadline a deferred job is given


def tracer() -> Tracer:
    """ecobatch's tracer from the process's provider (a no-op one unless set up)."""
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span in progress, or None when nothing is traced."""
    if not trace.get_current_span().is_recording():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` names, or None."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else None


@contextmanager
def submit_span(client: redis.Redis, job_id: str, n_prompts: int, deferred: bool,
                deadline: datetime | None) -> Iterator[Span]:
    """The root span of a job's trace; a deferred job's context is kept for its release."""
    attrs: dict[str, str | int] = {"ecobatch.job_id": job_id, "ecobatch.prompts": n_prompts}
    with tracer().start_as_current_span("ecobatch.submit", kind=SpanKind.PRODUCER,
                                        attributes=attrs) as span:
        yield span
        if deferred and (tp := current_traceparent()):
            span.add_event("deferred", {"ecobatch.deadline": str(deadline)})
            with suppress(RedisError):  # a trace is no reason to fail a submission
                client.set(JOB_TRACE_KEY.format(job_id=job_id), tp, ex=JOB_TRACE_TTL_S)


@contextmanager
def release_span(client: redis.Redis, job_id: str) -> Iterator[None]:
    """A span in the deferred job's own trace while it is released into the pending list."""
    key = JOB_TRACE_KEY.format(job_id=job_id)
    parent = _kept_context(client, key) if tracing_active() else None
    with tracer().start_as_current_span("ecobatch.release", context=parent,
                                        attributes={"ecobatch.job_id": job_id}) as span:
        span.add_event("released")
        yield
    if parent is not None:
        with suppress(RedisError):
            client.delete(key)


def _kept_context(client: redis.Redis, key: str) -> Context | None:
    try:
        kept = client.get(key)
    except RedisError:
        return None
    return context_of(kept.decode() if isinstance(kept, bytes) else kept)


def start_batch_span(batch_id: str, device: str, traceparents: Iterable[str | None],
                     job_ids: str) -> Span | None:
    """The router's span of one batch: in the trace of its first traced prompt, linked to the
    traces of the others; None when nothing is traced."""
    contexts = [c for tp in dict.fromkeys(traceparents) if (c := context_of(tp)) is not None]
    if not contexts:
        return None
    links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts[1:]]
    attrs = {"ecobatch.batch_id": batch_id, "ecobatch.device": device,
             "ecobatch.job_id": job_ids}
    return tracer().start_span("ecobatch.route", context=contexts[0], links=links,
                               attributes=attrs)


def publish_in_spans(publish: Callable[[Sequence[tuple[str, str]]], None],
                     dispatches: Sequence[tuple[str, str]], spans: Mapping[str, Span]) -> None:
    """Publish ``(batch_id, queue)`` pairs, each traced one inside its batch's span (so the
    message carries that trace), the rest together in one call; end every span."""
    plain = [d for d in dispatches if d[0] not in spans]
    try:
        if plain:
            publish(plain)
        for d in dispatches:
            if (span := spans.get(d[0])) is not None:
                with trace.use_span(span):
                    publish([d])
    finally:
        for span in spans.values():
            span.end()


def tracing_active() -> bool:
    """True when this process has a real (SDK) tracer provider."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def event(name: str, **attributes: Any) -> None:
    """Add an event to the span in progress (nothing when none is)."""
    trace.get_current_span().add_event(name, attributes)
