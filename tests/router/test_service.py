"""route_pass: the plain function behind the Celery task ecobatch.route."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.devices import Registry
from pipeline.models import Batch
from pipeline.settings import Settings
from router.profiled import ProfilePredictor
from router.route import Dispatch
from router.service import cached_predictor, route_pass
from tests.router.conftest import FixedCarbon, seed_job

pytestmark = pytest.mark.service


@dataclass
class Ctx:
    settings: Settings
    engine: Engine
    redis: redis.Redis
    registry: Registry
    grid: FixedCarbon
    cache: dict[str, Any] = field(default_factory=dict)


def test_route_pass_routes_and_republishes_once(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon
) -> None:
    with Session(engine) as s:  # a batch lost long ago between commit and publish
        s.add(Batch(id="lost", device="edge", size=1,
                    created_at=datetime.now(UTC) - timedelta(hours=2)))
        s.commit()
    seed_job(engine, rclient, "j1", 8, enqueued_unix_s=0.0)
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


def test_predictor_is_cached(engine: Engine, registry: Registry, carbon: FixedCarbon) -> None:
    ctx = Ctx(Settings(), engine, None, registry, carbon)  # type: ignore[arg-type]
    first = cached_predictor(ctx)
    assert isinstance(first, ProfilePredictor) and cached_predictor(ctx) is first
