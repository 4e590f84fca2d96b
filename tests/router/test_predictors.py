"""Nominal predictions from the registry, profile fits from DeviceProfile rows, and fallback."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.fleet.devices import Device, Registry
from pipeline.ledger.models import DeviceProfile
from router.predict.nominal import NominalPredictor, tokens_per_s_at
from router.predict.predictor import BatchShape
from router.predict.profiled import (
    ProfilePredictor,
    load_predictor,
    profile_status,
    recommended_batch_size,
)

GPU = Device(name="gpu", kind="nvidia", zone="DE-LU", tdp_w=300.0, max_batch_size=32,
             nominal_tokens_per_s=800.0)
EDGE = Device(name="edge", kind="jetson", zone="DE-LU", tdp_w=25.0, max_batch_size=8,
              nominal_tokens_per_s=60.0)
REG = Registry(devices=[GPU, EDGE])

Row = tuple[float, float, float, float, float]
"""(prompt tokens, ttft s, completion tokens, latency s, power W), per batch."""

# Rates: prefill 1000/2000/4000 tokens/s, decode 200/800/1600 tokens/s.
GPU_ROWS: dict[int, Row] = {1: (20, 0.02, 100, 0.52, 100.0), 4: (80, 0.04, 400, 0.54, 160.0),
                            16: (320, 0.08, 1600, 1.08, 250.0)}


def add_profile(engine: Engine, device: str, rows: Mapping[int, Row],
                model: str = "m.gguf", created_at: datetime | None = None) -> None:
    with Session(engine) as s:
        for b, (pt, ttft, ct, lat, power) in rows.items():
            energy = power * lat
            s.add(DeviceProfile(
                device=device, model=model, batch_size=b, prompt_tokens=pt, ttft_s=ttft,
                completion_tokens=ct, latency_s=lat, tokens_per_s=ct / lat, energy_j=energy,
                j_per_token=energy / ct, avg_power_w=power,
                created_at=created_at or datetime.now(UTC)))
        s.commit()


def test_nominal_prediction() -> None:
    shape = BatchShape(4, 100, 400)
    p = NominalPredictor().predict(GPU, shape)
    tps = 800.0 * 4**0.65
    assert tokens_per_s_at(GPU, 4) == pytest.approx(tps)
    assert p.latency_s == pytest.approx(400 / tps + 100 / (10 * tps))
    assert p.energy_j == pytest.approx(300.0 * p.latency_s)
    assert p.source == "nominal"


def test_nominal_batches_are_faster_per_token() -> None:
    one = NominalPredictor().predict(GPU, BatchShape(1, 10, 100)).latency_s
    four = NominalPredictor().predict(GPU, BatchShape(4, 40, 400)).latency_s
    assert one < four < 4 * one


@pytest.mark.service
def test_profile_exact_interpolated_and_clamped(engine: Engine) -> None:
    add_profile(engine, "gpu", GPU_ROWS)
    pred = load_predictor(engine, REG)
    assert isinstance(pred, ProfilePredictor)
    at4 = pred.predict(GPU, BatchShape(4, 80, 400))
    assert at4.source == "profile"
    assert at4.latency_s == pytest.approx(80 / 2000 + 400 / 800)
    assert at4.energy_j == pytest.approx(160.0 * at4.latency_s)
    # Halfway between 1 and 4 in log batch size: prefill 1500, decode 500, power 130.
    at2 = pred.predict(GPU, BatchShape(2, 30, 100))
    assert at2.latency_s == pytest.approx(30 / 1500 + 100 / 500)
    assert at2.energy_j == pytest.approx(130.0 * at2.latency_s)
    # Above the largest profiled size the rates stay flat.
    at32 = pred.predict(GPU, BatchShape(32, 320, 1600))
    assert at32.latency_s == pytest.approx(320 / 4000 + 1600 / 1600)


@pytest.mark.service
def test_below_smallest_profiled_size_rates_shrink(engine: Engine) -> None:
    add_profile(engine, "gpu", {4: GPU_ROWS[4]})
    pred = load_predictor(engine, REG)
    scale = 0.5**0.65
    at2 = pred.predict(GPU, BatchShape(2, 0, 100))
    assert at2.latency_s == pytest.approx(100 / (800 * scale))


@pytest.mark.service
def test_device_without_profile_falls_back_to_nominal(engine: Engine) -> None:
    add_profile(engine, "gpu", GPU_ROWS)
    pred = load_predictor(engine, REG)
    shape = BatchShape(4, 80, 256)
    assert pred.predict(EDGE, shape) == NominalPredictor().predict(EDGE, shape)
    assert pred.predict(GPU, shape).source == "profile"


@pytest.mark.service
def test_newest_model_rows_win(engine: Engine) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    slow: dict[int, Row] = {
        b: (pt, ttft * 10, ct, lat * 10, p) for b, (pt, ttft, ct, lat, p) in GPU_ROWS.items()}
    add_profile(engine, "gpu", slow, model="old.gguf", created_at=old)
    add_profile(engine, "gpu", {4: GPU_ROWS[4]}, model="new.gguf")
    pred = load_predictor(engine, REG)
    assert pred.predict(GPU, BatchShape(4, 80, 400)).latency_s == pytest.approx(0.54)
    pinned = load_predictor(engine, REG, model="old.gguf")
    assert pinned.predict(GPU, BatchShape(4, 80, 400)).latency_s == pytest.approx(5.4)


@pytest.mark.service
def test_profile_status(engine: Engine) -> None:
    day = datetime(2025, 3, 14, 12, tzinfo=UTC)
    add_profile(engine, "gpu", GPU_ROWS, created_at=day)
    add_profile(engine, "unregistered", GPU_ROWS)
    assert profile_status(engine, REG) == {
        "gpu": "profiled (3 batch sizes, 2025-03-14)",
        "edge": "nominal (no profile)",
    }


@pytest.mark.service
def test_recommended_batch_size(engine: Engine) -> None:
    add_profile(engine, "gpu", GPU_ROWS)  # J/token: 0.52, 0.216, 0.169; latency .52 .54 1.08
    assert recommended_batch_size(engine, GPU, 2.0) == 16
    assert recommended_batch_size(engine, GPU, 1.0) == 4
    assert recommended_batch_size(engine, GPU, 0.1) is None
    small = GPU.model_copy(update={"max_batch_size": 8})
    assert recommended_batch_size(engine, small, 2.0) == 4
    assert recommended_batch_size(engine, EDGE, 2.0) is None
