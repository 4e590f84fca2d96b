"""The summary of a finished job: per-device prompts, tokens, energy, CO2e and latency percentiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.table import Table
from sqlalchemy import Engine, select
from sqlmodel import Session

from pipeline.ledger.models import Result


@dataclass(frozen=True)
class DeviceSummary:
    """Totals and latency percentiles of one device's share of a job."""

    device: str
    prompts: int
    tokens: int
    energy_j: float
    carbon_g: float
    water_l: float
    p50_latency_s: float
    p95_latency_s: float
    energy_sources: str


def summarise(engine: Engine, job_id: str) -> list[DeviceSummary]:
    """One row per device that answered prompts of ``job_id``."""
    with Session(engine) as s:
        results = list(s.execute(select(Result).where(Result.job_id == job_id)).scalars())  # type: ignore[arg-type]
    by_device: dict[str, list[Result]] = {}
    for r in results:
        by_device.setdefault(r.device, []).append(r)
    return [_device_summary(name, rows) for name, rows in sorted(by_device.items())]


def _device_summary(device: str, rows: list[Result]) -> DeviceSummary:
    latencies = np.array([r.latency_s for r in rows])
    sources = sorted({_source_label(r) for r in rows})
    return DeviceSummary(
        device=device, prompts=len(rows),
        tokens=sum(r.prompt_tokens + r.completion_tokens for r in rows),
        energy_j=sum(r.energy_j for r in rows), carbon_g=sum(r.carbon_g for r in rows),
        water_l=sum(r.water_l for r in rows),
        p50_latency_s=float(np.percentile(latencies, 50)),
        p95_latency_s=float(np.percentile(latencies, 95)),
        energy_sources=", ".join(sources),
    )


def _source_label(r: Result) -> str:
    if r.energy_measured or r.energy_source.startswith("estimate"):
        return r.energy_source
    return f"{r.energy_source} (estimated)"


def summary_table(rows: list[DeviceSummary], title: str) -> Table:
    """A rich table of the per-device summary with a total line."""
    table = Table(title=title)
    for col in ("device", "prompts", "tokens", "energy J", "CO2e g", "water L",
                "p50 latency s", "p95 latency s", "energy source"):
        table.add_column(col, justify="left" if col in ("device", "energy source") else "right")
    for r in rows:
        table.add_row(r.device, str(r.prompts), str(r.tokens), f"{r.energy_j:.1f}",
                      f"{r.carbon_g:.4f}", f"{r.water_l:.5f}", f"{r.p50_latency_s:.2f}",
                      f"{r.p95_latency_s:.2f}", r.energy_sources)
    if len(rows) > 1:
        table.add_row("total", str(sum(r.prompts for r in rows)), str(sum(r.tokens for r in rows)),
                      f"{sum(r.energy_j for r in rows):.1f}", f"{sum(r.carbon_g for r in rows):.4f}",
                      f"{sum(r.water_l for r in rows):.5f}", "", "", "")
    return table
