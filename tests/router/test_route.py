"""route_once end to end on a real Redis and on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.broker.queue import ROUTER_LOCK_KEY, pending_count, push_refs
from pipeline.fleet.devices import Registry
from pipeline.ledger.models import Batch, BatchStatus, Job, Prompt, PromptStatus, Result
from pipeline.settings import Settings
from router.config import RouterConfig
from router.live.route import Dispatch, RouteReport, publish_each, route_once
from router.predict.nominal import NominalPredictor
from router.predict.predictor import BatchShape, Prediction
from router.recovery.requeue import republish_stale
from tests.router.conftest import FixedCarbon, seed_job

pytestmark = pytest.mark.service
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class Recorder:
    """A publish function that records its calls and checks each batch is already committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[list[Dispatch]] = []

    def __call__(self, dispatches: Sequence[Dispatch]) -> None:
        ids = [bid for bid, _ in dispatches]
        stmt = select(func.count()).where(Batch.__table__.c.id.in_(ids))  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            committed = conn.scalar(stmt)
        assert committed == len(dispatches), "published before commit"
        self.calls.append(list(dispatches))

    @property
    def sent(self) -> list[Dispatch]:
        return [d for call in self.calls for d in call]


def route(settings: Settings, engine: Engine, client: redis.Redis, registry: Registry,
          carbon: FixedCarbon, publish: Recorder, now: datetime = NOW, **kw: object) -> RouteReport:
    return route_once(RouterConfig.from_settings(settings), engine, client, registry,
                      NominalPredictor(), carbon, publish,
                      now, **kw)  # type: ignore[arg-type]


def batches(engine: Engine) -> list[Batch]:
    with Session(engine) as s:
        return list(s.scalars(select(Batch)))


def prompts(engine: Engine) -> list[Prompt]:
    with Session(engine) as s:
        return list(s.scalars(select(Prompt)))


def assert_each_prompt_in_one_batch(engine: Engine) -> None:
    by_batch = {b.id: b for b in batches(engine)}
    counts: dict[str, int] = {}
    for p in prompts(engine):
        if p.status == PromptStatus.BATCHED:
            assert p.batch_id in by_batch
            counts[p.batch_id] = counts.get(p.batch_id, 0) + 1
    assert counts == {bid: b.size for bid, b in by_batch.items()}


def test_full_batches_go_now_partial_waits_then_flushes(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 10, enqueued_unix_s=NOW.timestamp())
    pub = Recorder(engine)
    settings = Settings(batch_size=4, max_wait_s=0.5, strategy="carbon")
    report = route(settings, engine, rclient, registry, carbon, pub)
    assert (report.batches, report.prompts, report.waiting_refs) == (2, 8, 2)
    assert report.stop_reason == "partial batch not due" and not report.locked_out
    assert pending_count(rclient) == 2
    rows = batches(engine)
    assert {(b.device, b.strategy, b.size, b.status) for b in rows} == {
        ("edge", "carbon", 4, BatchStatus.DISPATCHED)}
    assert all(b.predicted_latency_s > 0 and b.predicted_energy_j > 0 and b.predicted_carbon_g > 0
               and b.prediction_source == "nominal" for b in rows)
    assert sorted(pub.sent) == sorted((b.id, "device.edge") for b in rows)

    later = route(settings, engine, rclient, registry, carbon, pub, now=NOW + timedelta(seconds=1))
    assert (later.batches, later.prompts, later.stop_reason) == (1, 2, "empty")
    assert pending_count(rclient) == 0
    assert sorted(b.size for b in batches(engine)) == [2, 4, 4]
    assert all(p.status == PromptStatus.BATCHED for p in prompts(engine))
    assert_each_prompt_in_one_batch(engine)
    assert rclient.get(ROUTER_LOCK_KEY) is None


def test_many_passes_in_one_call(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 203, enqueued_unix_s=NOW.timestamp() - 5)
    pub = Recorder(engine)
    report = route(Settings(batch_size=4, strategy="greedy"), engine, rclient, registry, carbon,
                   pub, peek_refs_max=40)
    assert (report.prompts, report.batches, report.passes) == (203, 51, 6)
    assert report.by_device == {"gpu": 51} and len(pub.calls) == 6
    assert_each_prompt_in_one_batch(engine)


def test_latency_spreads_load_and_respects_existing_backlog(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    with Session(engine) as s:
        s.add(Batch(id="busy", device="gpu", size=4, predicted_latency_s=1e6))
        s.commit()
    seed_job(engine, rclient, "j1", 48, enqueued_unix_s=NOW.timestamp())
    report = route(Settings(batch_size=4, strategy="latency"), engine, rclient, registry,
                   carbon, Recorder(engine))
    # edge takes ~1.9 s a batch, cpu ~11 s: cpu gets work once edge's backlog exceeds that.
    assert "gpu" not in report.by_device
    assert report.by_device["edge"] > report.by_device["cpu"] > 0


def test_batch_size_capped_at_largest_device(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 70, enqueued_unix_s=NOW.timestamp() - 5)
    report = route(Settings(batch_size=64, strategy="carbon"), engine, rclient, registry,
                   carbon, Recorder(engine))
    assert sorted(b.size for b in batches(engine)) == [6, 32, 32]
    # Only gpu takes 32; the 6-prompt rest fits the clean edge box, which carbon prefers.
    assert report.by_device == {"gpu": 2, "edge": 1}


def test_duplicate_and_unknown_refs_are_skipped(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    refs = seed_job(engine, rclient, "j1", 8, enqueued_unix_s=NOW.timestamp() - 5)
    push_refs(rclient, refs[:4])
    push_refs(rclient, [refs[0].__class__("ghost:0", "ghost", 0.0, 1, 1)])
    report = route(Settings(batch_size=4), engine, rclient, registry, carbon, Recorder(engine))
    assert (report.prompts, report.skipped_refs) == (8, 5)
    assert pending_count(rclient) == 0
    assert_each_prompt_in_one_batch(engine)


def test_lock_contention(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 8, enqueued_unix_s=NOW.timestamp())
    rclient.set(ROUTER_LOCK_KEY, "someone-else", px=30_000, nx=True)
    pub = Recorder(engine)
    report = route(Settings(), engine, rclient, registry, carbon, pub)
    assert report.locked_out and report.stop_reason == "locked"
    assert pending_count(rclient) == 8 and not pub.calls and not batches(engine)
    assert rclient.get(ROUTER_LOCK_KEY) == "someone-else"
    rclient.delete(ROUTER_LOCK_KEY)
    assert route(Settings(), engine, rclient, registry, carbon, pub).prompts == 8


class Exploding:
    def predict(self, device: object, shape: BatchShape) -> Prediction:
        raise RuntimeError("boom")


def test_failure_before_commit_returns_refs(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    refs = seed_job(engine, rclient, "j1", 8, enqueued_unix_s=NOW.timestamp())
    with pytest.raises(RuntimeError):
        route_once(RouterConfig.from_settings(Settings()), engine, rclient, registry, Exploding(), carbon,
                   Recorder(engine), NOW)
    assert rclient.lrange("ecobatch:pending", 0, -1) == [r.encode() for r in refs]
    assert not batches(engine) and rclient.get(ROUTER_LOCK_KEY) is None
    assert all(p.status == PromptStatus.PENDING for p in prompts(engine))


def test_lost_publish_is_republished(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 12, enqueued_unix_s=NOW.timestamp())

    def crash(dispatches: Sequence[Dispatch]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        route(Settings(), engine, rclient, registry, carbon, crash)  # type: ignore[arg-type]
    committed = batches(engine)
    assert len(committed) == 3 and pending_count(rclient) == 0  # committed, never published
    with Session(engine) as s:  # one batch already has a result, one is running
        s.add(Result(prompt_id="j1:0", job_id="j1", batch_id=committed[0].id, device="edge",
                     output="x"))
        running = s.get(Batch, committed[1].id)
        assert running is not None
        running.status = BatchStatus.RUNNING
        s.commit()
    later = NOW + timedelta(minutes=10)
    pub = Recorder(engine)
    assert republish_stale(engine, pub, older_than_s=3600, now=later) == 0
    assert republish_stale(engine, pub, older_than_s=60, now=later) == 1
    assert pub.sent == [(committed[2].id, f"device.{committed[2].device}")]


def test_publish_each_adapter() -> None:
    seen: list[tuple[str, str]] = []
    publish_each(lambda b, q: seen.append((b, q)))([("a", "device.x"), ("b", "device.y")])
    assert seen == [("a", "device.x"), ("b", "device.y")]


def test_time_budget_stops_after_a_pass(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 40, enqueued_unix_s=NOW.timestamp())
    report = route(Settings(batch_size=4), engine, rclient, registry, carbon, Recorder(engine),
                   time_budget_s=0.0, peek_refs_max=8)
    assert (report.passes, report.prompts, report.stop_reason) == (1, 8, "time budget")
    assert pending_count(rclient) == 32


def test_each_job_is_routed_by_its_own_strategy_and_batches_never_mix_them(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon,
) -> None:
    t0 = NOW.timestamp() - 10
    seed_job(engine, rclient, "jcarbon", 8, enqueued_unix_s=t0)
    seed_job(engine, rclient, "jgreedy", 8, enqueued_unix_s=t0)
    seed_job(engine, rclient, "jdefault", 4, enqueued_unix_s=t0)
    with Session(engine) as s:
        for job_id, strategy in (("jcarbon", "carbon"), ("jgreedy", "greedy")):
            job = s.get(Job, job_id)
            assert job is not None
            job.strategy = strategy
            s.add(job)
        s.commit()
    report = route(Settings(batch_size=4, strategy="latency"), engine, rclient, registry,
                   carbon, Recorder(engine))
    assert report.prompts == 20
    with Session(engine) as s:
        rows = s.execute(select(Prompt.job_id, Batch.strategy, Batch.device)  # type: ignore[call-overload]
                         .join(Batch, Batch.id == Prompt.batch_id)).all()
    by_job = {job: {(strategy, device) for j, strategy, device in rows if j == job}
              for job in ("jcarbon", "jgreedy", "jdefault")}
    assert {st for st, _ in by_job["jcarbon"]} == {"carbon"}
    assert {dev for _, dev in by_job["jcarbon"]} == {"edge"}  # the clean zone
    assert by_job["jgreedy"] == {("greedy", "gpu")}  # first in registry order
    assert {st for st, _ in by_job["jdefault"]} == {"latency"}  # no strategy: the router's
    assert all(b.size == 4 for b in batches(engine))


def test_the_slo_counts_the_wait_before_routing(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon,
) -> None:
    # The clean edge box finishes a batch in ~1.9 s, within a 10 s SLO counted from routing;
    # but these prompts have already waited 9 s, so only the fast GPU still meets it.
    seed_job(engine, rclient, "late", 4, enqueued_unix_s=NOW.timestamp() - 9.0)
    seed_job(engine, rclient, "fresh", 4, enqueued_unix_s=NOW.timestamp() - 0.1)
    settings = Settings(batch_size=4, strategy="carbon", slo_s=10.0)
    report = route(settings, engine, rclient, registry, carbon, Recorder(engine))
    assert report.batches == 2
    with Session(engine) as s:
        rows = s.execute(select(Prompt.job_id, Batch.device, Batch.reason)  # type: ignore[call-overload]
                         .join(Batch, Batch.id == Prompt.batch_id)).all()
    device = {job: (dev, reason) for job, dev, reason in rows}
    assert device["fresh"][0] == "edge"
    assert device["late"][0] == "gpu"
    assert "less 9.0 s already waited" in device["late"][1]
