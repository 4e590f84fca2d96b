"""A device whose grid data fails at run time is left out, with the reason on the batch and one
warning; the other devices go on, and the deferral planner does not fail either (real Redis,
SQLite and PostgreSQL, real grid files)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select
from sqlmodel import Session

from pipeline.fleet.devices import Device, Registry
from pipeline.grid.data import GridData
from pipeline.grid.forecast import Forecaster
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import submit_records
from pipeline.ledger.models import Batch, Job, JobPlan, JobStatus
from pipeline.settings import Settings
from router.config import RouterConfig
from router.deferral.planner import JobWork, device_forecast, plan_job
from router.deferral.release import Planning, plan_pass
from router.live.route import RouteEnv, route_once
from router.predict.nominal import NominalPredictor
from tests.gridfiles import write_em_csv
from tests.router.conftest import seed_job

pytestmark = pytest.mark.service
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)  # replays 2024-06-01 12:00, which SG's file lacks


def january_only_sg(tmp_path: Path) -> GridData:
    """SG carbon for the first two days of 2024 only: known zone, no value in June."""
    write_em_csv(tmp_path / "SG_2024_hourly.csv", "SG", datetime(2024, 1, 1), [400.0] * 48)
    return GridData(tmp_path)


def sg_then_gb() -> Registry:
    return Registry(devices=[Device(name="sg", kind="cpu", zone="SG"),
                             Device(name="gb", kind="cpu", zone="GB")])


def test_a_device_without_data_now_is_left_out_with_the_reason_and_one_warning(
        engine: Engine, rclient: redis.Redis, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    grid, env, sent = january_only_sg(tmp_path), RouteEnv(), []
    settings = Settings(batch_size=2, max_wait_s=0.1, strategy="greedy")
    caplog.set_level(logging.WARNING, logger="router")
    for k in range(3):  # three routing calls, as three beats of the router
        seed_job(engine, rclient, f"j{k}", 4, enqueued_unix_s=NOW.timestamp())
        report = route_once(RouterConfig.from_settings(settings), engine, rclient, sg_then_gb(),
                            NominalPredictor(), grid, sent.extend, NOW, env=env)
        assert report.prompts == 4 and report.unroutable == ""
    with Session(engine) as s:
        rows = list(s.scalars(select(Batch)))
    assert len(rows) == 6 and {b.device for b in rows} == {"gb"}
    for b in rows:
        assert "excluded sg (no grid data: carbon SG: no carbon intensity for 2025-06-01T12" \
            in str(b.reason)
        assert b.scores["sg"]["excluded"].startswith("no grid data")
        assert b.scores["sg"]["carbon_g"] is None  # unknown, stored as JSON null
    warnings = [r for r in caplog.records if "device sg is left out" in r.getMessage()]
    assert len(warnings) == 1


def test_when_no_device_has_data_the_prompts_wait_without_an_error(
        engine: Engine, rclient: redis.Redis, tmp_path: Path) -> None:
    seed_job(engine, rclient, "j", 2, enqueued_unix_s=NOW.timestamp())
    only_sg = Registry(devices=[Device(name="sg", kind="cpu", zone="SG")])
    report = route_once(RouterConfig.from_settings(Settings(batch_size=2)), engine, rclient, only_sg,
                        NominalPredictor(), january_only_sg(tmp_path), [].extend, NOW)
    assert report.prompts == 0 and report.stop_reason.startswith("unroutable: no device")
    assert "sg (no grid data" in report.unroutable


def _deferred_job(engine: Engine, rclient: redis.Redis, now: datetime) -> str:
    records = validate_records([f"question {i}" for i in range(8)])
    return submit_records(engine, rclient, records, source="test", strategy="carbon",
                          default_max_tokens=16, deferred=True,
                          deadline=now + timedelta(hours=10)).job_id


def test_the_planner_leaves_out_a_device_without_forecast_and_never_fails(
        engine: Engine, rclient: redis.Redis, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    job_id = _deferred_job(engine, rclient, now)
    forecast = Forecaster(january_only_sg(tmp_path))
    planning = Planning(sg_then_gb(), NominalPredictor(), forecast, 4)
    report = plan_pass(engine, rclient, planning, now)
    assert report.planned == [job_id]
    with Session(engine) as s:
        plan = s.get(JobPlan, job_id)
        assert plan is not None and plan.devices == ["gb"]
        assert "sg left out (no forecast: " in str(plan.note)
    alone = Planning(Registry(devices=[Device(name="sg", kind="cpu", zone="SG")]),
                     NominalPredictor(), forecast, 4)
    other = _deferred_job(engine, rclient, now)
    report = plan_pass(engine, rclient, alone, now)
    assert other in report.unplanned and "no device can plan this job" in report.unplanned[other]
    with Session(engine) as s:
        job = s.get(Job, other)
        assert job is not None and job.status == JobStatus.DEFERRED


def test_the_planner_forecasts_a_fixed_intensity_device_at_its_figure(tmp_path: Path) -> None:
    fixed = Device(name="fixed", kind="cpu", intensity_g_per_kwh=5.0)
    forecast = Forecaster(january_only_sg(tmp_path))
    assert device_forecast(forecast, fixed, NOW, 3) == [5.0, 5.0, 5.0]
    work = JobWork(n_prompts=8, prompt_tokens=80, max_new_tokens=128)
    reg = Registry(devices=[Device(name="gb", kind="cpu", zone="GB"), fixed])
    plan = plan_job(work, reg, NominalPredictor(), forecast, 4, NOW, NOW + timedelta(hours=6))
    assert plan.devices == ("fixed",)  # 5 g/kWh beats GB's trace; before, it was DE-LU's
