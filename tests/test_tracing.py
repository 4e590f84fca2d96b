"""One OpenTelemetry trace follows a prompt from submit, through the Redis pending list and
the router, over the Celery message to the worker's inference and SQL write; a deferred
job's trace carries its deferral and its release.

Real Redis, SQLite and a real Celery worker (a thread consuming the device queue over the
broker, not eager mode); the router's pass runs in the test's thread. Spans go to the SDK's
in-memory exporter through the same set-up as production (``pipeline.app.tracing``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("opentelemetry.sdk")

from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from pipeline.app.celery_app import EcobatchCelery, create_app, publisher_for
from pipeline.app.tracing import setup_tracing
from pipeline.broker.alive import beat, worker_identity
from pipeline.client import Client
from pipeline.settings import load_settings
from router.service import guarded_route_pass
from tests.cluster import wait_until

pytestmark = pytest.mark.service
WAIT_S = 60.0


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracing, exporting to memory; undone after the module (the SDK allows
    one provider a process, so the global is reset as OpenTelemetry's own test utilities do)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    exporter = InMemorySpanExporter()
    provider = setup_tracing("ecobatch-test", exporter, simple=True)
    yield exporter
    for instrumentor in (CeleryInstrumentor(), RedisInstrumentor()):
        instrumentor.uninstrument()
    provider.shutdown()
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def app(spans: InMemorySpanExporter, redis_url: str, sqlite_url: str) -> EcobatchCelery:
    """The Celery app of a cluster on the test services, the echo backend, the device beating."""
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, backend="echo",
                             batch_size=2, max_wait_s=0.05)
    celery_app = create_app(settings)
    celery_app.ctx.worker_id = worker_identity()
    spans.clear()
    return celery_app


def _route_until_done(app: EcobatchCelery, client: Client, job_id: str) -> None:
    publish = publisher_for(app)

    def done() -> bool:
        beat(app.ctx.redis, "cpu", 30.0, app.ctx.worker_id)
        guarded_route_pass(app.ctx, publish)
        return client.status(job_id).finished

    wait_until(f"job {job_id} answered", done, WAIT_S, poll_s=0.1)


def _trace_of(spans: list[ReadableSpan], job_id: str) -> list[ReadableSpan]:
    roots = [s for s in spans if s.name == "ecobatch.submit"
             and (s.attributes or {}).get("ecobatch.job_id") == job_id]
    assert len(roots) == 1, [s.name for s in spans]
    trace_id = roots[0].context.trace_id
    return [s for s in spans if s.context.trace_id == trace_id]


def _names(spans: list[ReadableSpan]) -> list[str]:
    return [s.name for s in sorted(spans, key=lambda s: s.start_time or 0)]


def _settle(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Finished spans once the worker's last ``name`` span has ended (it ends after the ack)."""
    wait_until(f"a {name} span", lambda: any(
        s.name == name for s in exporter.get_finished_spans()), WAIT_S)
    time.sleep(0.2)
    return list(exporter.get_finished_spans())


def test_one_trace_from_submit_to_the_sql_write(app: EcobatchCelery,
                                               spans: InMemorySpanExporter) -> None:
    with start_worker(app, pool="solo", queues=["device.cpu"], perform_ping_check=False,
                      loglevel="WARNING"), Client(app.ctx.settings) as client:
        job_id = client.submit(["What is a joule?", "Define PUE."])
        _route_until_done(app, client, job_id)
        finished = _settle(spans, "run/ecobatch.infer_batch")
    ours = _trace_of(finished, job_id)
    names = _names(ours)
    print("\n" + "\n".join(f"{s.name} [{s.kind.name}] trace {s.context.trace_id:032x}"
                           for s in sorted(ours, key=lambda s: s.start_time or 0)))
    for want in ("ecobatch.submit", "RPUSH", "ecobatch.route", "apply_async/ecobatch.infer_batch",
                 "run/ecobatch.infer_batch", "ecobatch.inference", "ecobatch.write_results"):
        assert want in names, (want, names)
    writes = [s for s in ours if s.parent is not None and s.name.startswith("INSERT")
              and _parent_name(ours, s) == "ecobatch.write_results"]
    assert writes, names  # the result rows' SQL, in the same trace


def _parent_name(spans: list[ReadableSpan], span: ReadableSpan) -> str | None:
    parent = span.parent
    return next((s.name for s in spans if parent and s.context.span_id == parent.span_id), None)


def test_a_deferred_job_keeps_its_trace_through_deferral_and_release(
    app: EcobatchCelery, spans: InMemorySpanExporter
) -> None:
    # A deadline the job can no longer meet when the planner first looks: it is released at
    # once (where a later deadline would depend on the grid's hours).
    deadline = datetime.now(UTC) + timedelta(seconds=3)
    with start_worker(app, pool="solo", queues=["device.cpu"], perform_ping_check=False,
                      loglevel="WARNING"), Client(app.ctx.settings) as client:
        job_id = client.submit(["Deferred question"], deadline=deadline, deferred=True)
        wait_until("the deadline to pass", lambda: datetime.now(UTC) > deadline, WAIT_S)
        _route_until_done(app, client, job_id)
        finished = _settle(spans, "run/ecobatch.infer_batch")
    ours = _trace_of(finished, job_id)
    events = {e.name for s in ours for e in s.events}
    assert {"deferred", "released"} <= events
    names = _names(ours)
    assert names.index("ecobatch.release") < names.index("ecobatch.route") < names.index(
        "ecobatch.inference"), names
