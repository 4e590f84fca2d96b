"""The device task's body writes a GPU's host share apart from the GPU's energy, on a real
ledger (SQLite and PostgreSQL), with the model-free echo backend and preset meter readings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from pipeline.app.context import AppContext
from pipeline.ledger.db import session_scope
from pipeline.ledger.models import Batch, Job, Prompt, PromptStatus, Result
from pipeline.settings import load_settings
from tests.workers.test_meter_counters import FixedMeter
from workers.meters import HostShareMeter
from workers.meters.base import EnergyReading
from workers.service.infer import run_batch


def test_host_share_is_written_apart(db_url: str, tmp_path: Path) -> None:
    registry = tmp_path / "devices.toml"
    registry.write_text('[[device]]\nname = "gpu0"\nkind = "nvidia"\nzone = "DE-LU"\n'
                        'pue = 1.5\nembodied_kgco2e = 150.0\n')
    ctx = AppContext(load_settings(database_url=db_url, devices=registry, backend="echo"))
    gpu = FixedMeter(EnergyReading(360.0, 2.0, "nvml", True, notes=("short-window",)))
    host = FixedMeter(EnergyReading(80.0, 2.0, "rapl", True, {"package": 60.0, "dram": 20.0}))
    ctx.worker_state.meters["gpu0"] = HostShareMeter(gpu, host, 0.5)
    with session_scope(ctx.engine) as s:
        s.add(Job(id="j1", n_prompts=2))
        s.add(Batch(id="b1", device="gpu0", size=2))
        s.flush()
        s.add_all(Prompt(id=f"j1:{i}", job_id="j1", position=i, external_id=str(i), prompt=t,
                         max_tokens=4, status=PromptStatus.BATCHED, batch_id="b1")
                  for i, t in enumerate(["one two three", "four five six seven eight nine"]))
    assert run_batch(ctx, "b1")["status"] == "done"
    with Session(ctx.engine) as s:
        rows = list(s.execute(select(Result).order_by(Result.prompt_id)).scalars())
        batch = s.get(Batch, "b1")
    assert batch is not None
    assert (batch.energy_j, batch.host_energy_j, batch.host_energy_source) == (360.0, 40.0, "rapl")
    assert batch.host_energy_measured is True and batch.energy_notes == "short-window"
    assert sum(r.energy_j for r in rows) == 360.0 and sum(r.host_energy_j or 0 for r in rows) == 40.0
    assert {(r.host_energy_source, r.host_energy_measured) for r in rows} == {("rapl", True)}
    # carbon covers device + host: (360 + 40) J / 3.6e6 x PUE 1.5 x the hour's intensity
    assert sum(r.carbon_g for r in rows) == pytest.approx(
        400.0 / 3.6e6 * 1.5 * rows[0].intensity_g_per_kwh)

