"""route_pass: the plain function behind the Celery task ecobatch.route."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.broker.alive import beat, stop_beating
from pipeline.broker.queue import pending_count
from pipeline.fleet.devices import Registry
from pipeline.ledger.models import Batch, BatchStatus
from pipeline.settings import Settings
from router.config import RouterConfig
from router.live.route import Dispatch
from router.predict.permodel import ModelPredictors
from router.predict.profiled import ProfilePredictor
from router.service import RouterState, cached_predictor, route_pass
from tests.router.conftest import FixedCarbon, seed_job

pytestmark = pytest.mark.service


@dataclass
class Ctx:
    settings: Settings
    engine: Engine
    redis: redis.Redis
    registry: Registry
    grid: FixedCarbon
    router_state: RouterState = field(default_factory=RouterState)

    @property
    def router_config(self) -> RouterConfig:
        return RouterConfig.from_settings(self.settings)

    @property
    def forecast(self) -> FixedCarbon:
        return self.grid


def test_route_pass_routes_and_republishes_once(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    with Session(engine) as s:  # a batch lost long ago between commit and publish
        s.add(Batch(id="lost", device="edge", size=1,
                    created_at=datetime.now(UTC) - timedelta(hours=2)))
        s.commit()
    seed_job(engine, rclient, "j1", 8, enqueued_unix_s=0.0)
    for name in registry.names:
        beat(rclient, name, 30.0)
    ctx = Ctx(Settings(batch_size=4), engine, rclient, registry, carbon)
    sent: list[Dispatch] = []

    def publish(dispatches: Sequence[Dispatch]) -> None:
        sent.extend(dispatches)

    out = route_pass(ctx, publish)
    json.dumps(out)
    assert out["prompts"] == 8 and out["batches"] == 2 and out["republished"] == 1
    assert ("lost", "device.edge") in sent and len(sent) == 3
    again = route_pass(ctx, publish)
    assert again["prompts"] == 0 and "republished" not in again  # once per visibility timeout


def test_dead_device_is_never_chosen_and_its_queued_batches_move(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 4, enqueued_unix_s=0.0)
    for name in registry.names:
        beat(rclient, name, 30.0)
    ctx = Ctx(Settings(batch_size=4, strategy="carbon"), engine, rclient, registry, carbon)
    sent: list[Dispatch] = []
    route_pass(ctx, sent.extend)
    assert sent and sent[0][1] == "device.edge"  # the clean device
    first_batch = sent[0][0]
    stop_beating(rclient, "edge")  # its worker dies before taking the batch
    out = route_pass(ctx, sent.extend)
    assert out["moved"] == 1 and out["prompts"] == 4
    assert sent[-1][1] != "device.edge"
    with Session(engine) as s:
        moved = s.get(Batch, first_batch)
        assert moved is not None and moved.status == BatchStatus.MOVED
        new = s.get(Batch, sent[-1][0])
        assert new is not None and "excluded edge (no live worker)" in (new.reason or "")
        assert new.scores is not None and new.scores["edge"]["excluded"] == "no live worker"


def test_no_live_worker_keeps_prompts_pending(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "j1", 4, enqueued_unix_s=0.0)
    ctx = Ctx(Settings(batch_size=4), engine, rclient, registry, carbon)
    out = route_pass(ctx, lambda d: None)
    assert out["prompts"] == 0 and out["stop_reason"].startswith("unroutable")
    assert pending_count(rclient) == 4


def test_predictor_is_cached(engine: Engine, registry: Registry, carbon: FixedCarbon) -> None:
    ctx = Ctx(Settings(), engine, None, registry, carbon)  # type: ignore[arg-type]
    first = cached_predictor(ctx)
    assert isinstance(first, ModelPredictors) and cached_predictor(ctx) is first
    assert isinstance(first.default, ProfilePredictor) and first.by_file == {}
