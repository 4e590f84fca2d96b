"""Deferred jobs: planned in SQL, released once when the window opens, re-planned on change."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlmodel import Session, select

from pipeline.accounting.account import operational_carbon_g
from pipeline.app.cli.main import main
from pipeline.app.context import AppContext
from pipeline.app.serve.extension import batch_extension
from pipeline.broker.queue import pending_count
from pipeline.fleet.devices import Device, Registry
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import submit_records
from pipeline.ledger.models import Job, JobPlan, JobStatus
from pipeline.settings import Settings, load_settings
from router.deferral.release import Planning, plan_pass
from router.predict.nominal import NominalPredictor
from tests.cluster import wait_until

HOUR = timedelta(hours=1)


class StepForecast:
    """High intensity every hour except one low hour, counted from ``origin``'s hour."""

    def __init__(self, origin: datetime, low_hour: int) -> None:
        self.origin = origin.replace(minute=0, second=0, microsecond=0)
        self.low_hour = low_hour

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        first = start.replace(minute=0, second=0, microsecond=0)
        return [(first + k * HOUR, self._at(first + k * HOUR)) for k in range(hours)]

    def _at(self, t: datetime) -> float:
        return 50.0 if (t - self.origin) // HOUR == self.low_hour else 500.0


def _setup(engine: Engine, rclient: redis.Redis, n: int = 8, hours: float = 10.0
           ) -> tuple[str, datetime, Planning, StepForecast]:
    now = datetime.now(UTC)
    records = validate_records([f"question {i}" for i in range(n)])
    job_id = submit_records(engine, rclient, records, source="test", strategy="carbon",
                            default_max_tokens=16, deferred=True,
                            deadline=now + timedelta(hours=hours)).job_id
    forecast = StepForecast(now, low_hour=3)
    reg = Registry(devices=[Device(name="cpu", kind="cpu", zone="GB",
                                   nominal_tokens_per_s=100.0)])
    return job_id, now, Planning(reg, NominalPredictor(), forecast, Settings().batch_size), forecast


def test_deferred_job_waits_for_its_window_then_is_released_once(
    engine: Engine, rclient: redis.Redis
) -> None:
    job_id, now, planning, _ = _setup(engine, rclient)
    assert pending_count(rclient) == 0  # nothing enqueued at submit
    first = plan_pass(engine, rclient, planning, now)
    assert first.planned == [job_id] and first.released == []
    with Session(engine) as s:
        plan = s.get(JobPlan, job_id)
        assert plan is not None
        start = plan.start_at
        assert start == now.replace(minute=0, second=0, microsecond=0) + 3 * HOUR
        assert plan.carbon_g < plan.carbon_now_g
    assert plan_pass(engine, rclient, planning, start - timedelta(minutes=1)).released == []
    assert plan_pass(engine, rclient, planning, start).released == [job_id]
    assert pending_count(rclient) == 8
    assert plan_pass(engine, rclient, planning, start + HOUR).released == []
    assert pending_count(rclient) == 8
    with Session(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.QUEUED


def test_eight_hour_deferral_released_exactly_once_by_concurrent_planners(
    engine: Engine, rclient: redis.Redis
) -> None:
    _, now, planning, forecast = _setup(engine, rclient, n=12, hours=9.5)
    forecast.low_hour = 8
    plan_pass(engine, rclient, planning, now)
    assert plan_pass(engine, rclient, planning, now + 4 * HOUR).released == []
    at = now.replace(minute=0, second=0, microsecond=0) + 8 * HOUR
    with ThreadPoolExecutor(4) as pool:  # four planners wake at the same moment
        reports = list(pool.map(lambda _: plan_pass(engine, rclient, planning, at), range(4)))
    assert sum(len(r.released) for r in reports) == 1
    assert pending_count(rclient) == 12


def test_changed_forecast_replans_a_job_not_yet_released(
    engine: Engine, rclient: redis.Redis
) -> None:
    job_id, now, planning, forecast = _setup(engine, rclient)
    plan_pass(engine, rclient, planning, now)
    forecast.low_hour = 6
    assert plan_pass(engine, rclient, planning, now + timedelta(minutes=5)).planned == [job_id]
    with Session(engine) as s:
        plan = s.exec(select(JobPlan)).one()
        start = plan.start_at
    assert start == now.replace(minute=0, second=0, microsecond=0) + 6 * HOUR


def test_unmeetable_deadline_is_released_at_once_with_a_warning(
    engine: Engine, rclient: redis.Redis
) -> None:
    job_id, now, planning, _ = _setup(engine, rclient, n=400, hours=0.01)
    report = plan_pass(engine, rclient, planning, now)
    assert report.released == [job_id] and report.late == [job_id]


def test_plan_command_shows_the_window(engine: Engine, rclient: redis.Redis,
                                       db_url: str) -> None:
    job_id, now, planning, _ = _setup(engine, rclient)
    plan_pass(engine, rclient, planning, now)
    out = CliRunner().invoke(main, ["plan", job_id, "--database-url", db_url, "--json"])
    assert out.exit_code == 0, out.output
    assert '"devices": ["cpu"]' in out.output and '"saving_g"' in out.output
    table = CliRunner().invoke(main, ["plan", job_id, "--database-url", db_url])
    assert "gCO2e starting now (grid now)" in table.output


def test_the_batch_object_shows_a_deferred_jobs_window_and_saving(
    engine: Engine, rclient: redis.Redis
) -> None:
    job_id, now, planning, _ = _setup(engine, rclient)
    record = {"id": job_id, "ecobatch_deferred": True}
    before = batch_extension(engine, record)
    assert before["deferred"] is True and before["planned_start_at"] is None
    plan_pass(engine, rclient, planning, now)
    shown = batch_extension(engine, record)
    start = now.replace(minute=0, second=0, microsecond=0) + 3 * HOUR
    assert shown["planned_start_at"] == int(start.timestamp()) and shown["released_at"] is None
    assert shown["planned_end_at"] > shown["planned_start_at"] and shown["devices"] == ["cpu"]
    assert shown["carbon_saved_g"] == pytest.approx(shown["carbon_now_g"] - shown["carbon_g"])
    assert shown["carbon_saved_g"] > 0 and shown["basis"].startswith("estimated")
    plan_pass(engine, rclient, planning, start)
    assert batch_extension(engine, record)["released_at"] == int(start.timestamp())
    assert batch_extension(engine, {"id": job_id}) == {"deferred": False}


GB_PUE = 1.2


def _plan_by_cli(engine: Engine, rclient: redis.Redis, db_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], str, datetime]:
    """A one-prompt deferred job on a GB device, planned by ``ecobatch plan`` itself: its JSON
    view, its table, and the time it was planned at."""
    registry = tmp_path / "gb.toml"
    registry.write_text(f'[[device]]\nname = "gb"\nkind = "cpu"\nzone = "GB"\n'
                        f"pue = {GB_PUE}\nnominal_tokens_per_s = 1000.0\n")
    monkeypatch.setenv("ECOBATCH_DEVICES", str(registry))
    records = validate_records(["one question"])
    job_id = submit_records(engine, rclient, records, source="test", strategy="carbon",
                            default_max_tokens=4, deferred=True,
                            deadline=datetime.now(UTC) + timedelta(hours=10)).job_id
    # The job lasts milliseconds; keep it inside one hour so "now" is one hour's intensity.
    wait_until("the clock to leave an hour's last seconds",
               lambda: datetime.now(UTC).minute * 60 + datetime.now(UTC).second < 3590, 30)
    out = CliRunner().invoke(main, ["plan", job_id, "--database-url", db_url, "--json"])
    assert out.exit_code == 0, out.output
    table = CliRunner().invoke(main, ["plan", job_id, "--database-url", db_url])
    assert table.exit_code == 0, table.output
    with Session(engine) as s:
        planned = s.get(JobPlan, job_id)
        assert planned is not None
    return json.loads(out.output), table.output, planned.updated_at


def _baseline_intensity(view: dict[str, Any]) -> float:
    return float(view["carbon_now_g"]) / operational_carbon_g(view["energy_j"], GB_PUE, 1.0)


def test_plan_prices_starting_now_at_the_routers_intensity(
        engine: Engine, rclient: redis.Redis, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOBATCH_GRID_AT", raising=False)
    view, table, planned_at = _plan_by_cli(engine, rclient, db_url, tmp_path, monkeypatch)
    router_g_per_kwh = AppContext(load_settings()).grid.intensity_g_per_kwh("GB", planned_at)
    # Before: the 7-day same-hour forecast of this hour, e.g. 202.41 against the router's 150.36.
    assert _baseline_intensity(view) == pytest.approx(router_g_per_kwh, rel=1e-9)
    assert view["duration_s"] < 60
    # A window of milliseconds shows its seconds and its length, not "15:00 UTC -> 15:00 UTC".
    assert re.search(r"\d\d:\d\d:\d\d UTC -> \S+ \d\d:\d\d:\d\d UTC", table), table
    assert re.search(r"duration \(predicted\)\s+│\s+\d+\.\d s", table), table


def test_plan_with_the_grid_pinned_prices_now_at_the_pinned_hour(
        engine: Engine, rclient: redis.Redis, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOBATCH_GRID_AT", "2024-06-03T12:00Z")
    view, _, planned_at = _plan_by_cli(engine, rclient, db_url, tmp_path, monkeypatch)
    router_g_per_kwh = AppContext(load_settings()).grid.intensity_g_per_kwh("GB", planned_at)
    assert router_g_per_kwh == 138.64  # GB's trace at 2024-06-03 12:00 UTC
    assert _baseline_intensity(view) == pytest.approx(router_g_per_kwh, rel=1e-9)
