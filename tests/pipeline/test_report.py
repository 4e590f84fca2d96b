"""``ecobatch report``: totals and per-device figures from a real ledger (SQLite and PostgreSQL),
the section list other sections extend, and a PNG that matplotlib reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, Job, Result
from pipeline.report.sections import (
    COLUMNS,
    SECTION_BUILDERS,
    ReportData,
    Section,
    build_report,
    load_report_data,
    summarise,
)

T0 = datetime(2024, 7, 1, 12, 10, tzinfo=UTC)


def result(i: int, device: str, *, energy_j: float, latency_s: float, host_j: float | None = None,
           cost: float | None = 0.001, measured: bool = True) -> Result:
    return Result(prompt_id=f"job1:{i}", job_id="job1", batch_id=f"b-{device}", device=device,
                  output="x", prompt_tokens=10, completion_tokens=20 + i, latency_s=latency_s,
                  energy_j=energy_j, energy_source="nvml" if measured else "estimate:tdp*cpu-util",
                  energy_measured=measured, host_energy_j=host_j, carbon_g=energy_j / 100,
                  embodied_carbon_g=0.01, water_l=energy_j / 1e5, cost_usd=cost,
                  intensity_g_per_kwh=200.0 + i, created_at=T0 + timedelta(minutes=30 * i))


def seed(url: str) -> None:
    engine = make_engine(url)
    with Session(engine) as s:
        s.add(Job(id="job1", n_prompts=4))
        s.add(Batch(id="b-gpu", device="gpu", strategy="carbon", size=2,
                    reason="carbon: best score; excluded edge (no live worker)",
                    scores={"gpu": {"score": 0.5, "finish_s": 1.5, "excluded": None},
                            "cpu": {"score": 0.9, "finish_s": 4.0, "excluded": None},
                            "edge": {"score": None, "excluded": "no live worker"}}))
        s.add(Batch(id="b-cpu", device="cpu", strategy="carbon", size=2))
        s.add_all([
            result(0, "gpu", energy_j=3600.0, latency_s=1.0, host_j=360.0),
            result(1, "gpu", energy_j=7200.0, latency_s=3.0, host_j=720.0),
            result(2, "cpu", energy_j=1800.0, latency_s=2.0, cost=None, measured=False),
            result(3, "cpu", energy_j=1800.0, latency_s=4.0, cost=None, measured=False),
        ])
        s.commit()
    engine.dispose()


def test_summarise_by_hand() -> None:
    rows = [result(0, "gpu", energy_j=3600.0, latency_s=1.0, host_j=360.0),
            result(1, "gpu", energy_j=7200.0, latency_s=3.0, host_j=720.0)]
    got = dict(zip(COLUMNS, summarise("gpu", rows), strict=True))
    assert got["energy_kwh"] == pytest.approx(0.003)  # 10800 J / 3.6e6
    assert got["host_energy_kwh"] == pytest.approx(0.0003)
    assert got["carbon_g"] == pytest.approx(108.0) and got["cost_usd"] == pytest.approx(0.002)
    assert (got["prompt_tokens"], got["completion_tokens"]) == (20, 41)
    assert got["latency_p50_s"] == 2.0 and got["latency_p95_s"] == pytest.approx(2.9)
    assert got["energy_measured"] == 1.0


def test_sections_are_an_extendable_list() -> None:
    def decisions(data: ReportData) -> Section:
        return Section("Decisions", ["batch"], [[b.id] for b in data.batches])

    data = ReportData(Job(id="j"), [], [Batch(id="b1", device="gpu")])
    titles = [s.title for s in build_report(data, [*SECTION_BUILDERS, decisions])]
    assert titles == ["Totals", "Per device", "Per model", "Routing decisions", "Decisions"]


def test_report_cli_on_a_real_ledger(db_url: str, tmp_path: Path) -> None:
    seed(db_url)
    runner = CliRunner()
    out = runner.invoke(main, ["report", "job1", "--json", "--database-url", db_url])
    assert out.exit_code == 0, out.output
    totals, devices, models, decisions = json.loads(out.output)
    why = {r[0]: dict(zip(decisions["columns"], r, strict=True)) for r in decisions["rows"]}
    assert why["b-gpu"]["reason"].startswith("carbon: best score")
    assert why["b-gpu"]["candidates"] == ("cpu: 0.9; edge: excluded (no live worker); gpu: 0.5")
    assert why["b-gpu"]["predicted_finish_s"] == 1.5
    total = dict(zip(COLUMNS, totals["rows"][0], strict=True))
    assert total["prompts"] == 4 and total["energy_kwh"] == pytest.approx(0.004)
    assert total["cost_usd"] == pytest.approx(0.002) and total["energy_measured"] == 0.5
    assert [r[0] for r in devices["rows"]] == ["cpu", "gpu"]
    assert [r[0] for r in models["rows"]] == ["(device's model)"]
    cpu = dict(zip(COLUMNS, devices["rows"][0], strict=True))
    assert cpu["cost_usd"] is None and cpu["host_energy_kwh"] is None
    assert "estimate:tdp*cpu-util" in totals["note"]
    text = runner.invoke(main, ["report", "job1", "--database-url", db_url])
    assert text.exit_code == 0 and "Per device" in text.output and "kWh" in text.output


def test_report_plot_is_a_readable_png(db_url: str, tmp_path: Path) -> None:
    seed(db_url)
    registry = tmp_path / "devices.toml"
    registry.write_text('[[device]]\nname = "gpu"\nkind = "nvidia"\nzone = "DE-LU"\n')
    png = tmp_path / "report.png"
    out = CliRunner().invoke(main, ["report", "job1", "--database-url", db_url,
                                    "--devices", str(registry), "--plot", str(png)])
    assert out.exit_code == 0, out.output
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.shape[0] == 700 and image.shape[1] == 1000  # 10 x 7 in at 100 dpi


def test_unknown_job_is_a_clear_error(sqlite_url: str) -> None:
    out = CliRunner().invoke(main, ["report", "nope", "--database-url", sqlite_url])
    assert out.exit_code != 0 and "job nope not found" in out.output


def test_load_report_data_keeps_rows_in_prompt_order(sqlite_url: str) -> None:
    seed(sqlite_url)
    data = load_report_data(make_engine(sqlite_url), "job1")
    assert [r.prompt_id for r in data.results] == [f"job1:{i}" for i in range(4)]
    assert sorted(b.id for b in data.batches) == ["b-cpu", "b-gpu"]
