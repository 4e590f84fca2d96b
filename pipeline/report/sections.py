"""What a job cost: totals and per-device breakdowns of energy, CO2e, water, cost, tokens and
latency, built from the ledger.

A report is a list of sections, each made by a *section builder*: a function from the job's
:class:`ReportData` to a :class:`Section` (a titled table). :data:`SECTION_BUILDERS` lists them in
order; another section (routing decisions, say) is one more builder appended to that list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pipeline.accounting.account import JOULES_PER_KWH
from pipeline.errors import NotFoundError
from pipeline.ledger.jobs import decision_quality
from pipeline.ledger.models import Batch, Job, Result
from pipeline.report.decisions import DECISION_COLUMNS, decision_rows


@dataclass(frozen=True)
class ReportData:
    """Everything a section may use: the job, its result rows and its batches."""

    job: Job
    results: list[Result]
    batches: list[Batch]


@dataclass(frozen=True)
class Section:
    """One titled table of a report; ``rows`` hold plain values, formatted by the renderer."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


SectionBuilder = Callable[[ReportData], Section]


def load_report_data(engine: Engine, job_id: str) -> ReportData:
    """Read a job, its results and its batches.

    Raises:
        NotFoundError: no job with this id.
    """
    with Session(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        results = list(s.exec(select(Result).where(Result.job_id == job_id)
                              .order_by(col(Result.prompt_id))))
        batch_ids = sorted({r.batch_id for r in results})
        batches = list(s.exec(select(Batch).where(col(Batch.id).in_(batch_ids)))) \
            if batch_ids else []
        s.expunge_all()
    return ReportData(job, results, batches)


COLUMNS = ["device", "prompts", "energy_kwh", "host_energy_kwh", "carbon_g", "embodied_carbon_g",
           "water_l", "cost_usd", "prompt_tokens", "completion_tokens", "latency_p50_s",
           "latency_p95_s", "energy_measured", "intensity_signal"]


def summarise(name: str, rows: Sequence[Result]) -> list[Any]:
    """One report row over ``rows``, in :data:`COLUMNS` order.

    Energy is device energy; the host's share is its own column; carbon, water and cost cover
    both. Cost is None when no row has a price. ``energy_measured`` is the share of prompts
    whose device energy was measured (1.0: all measured; 0.0: all estimated).
    ``intensity_signal`` lists the grid signals the rows' carbon came from (average or
    marginal, and the source), None where no row recorded one.
    """
    latencies = np.array([r.latency_s for r in rows], dtype=float)
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    hosts = [r.host_energy_j for r in rows if r.host_energy_j is not None]
    p50, p95 = (np.percentile(latencies, [50, 95]).tolist() if len(rows) else [None, None])
    signals = sorted({r.intensity_signal for r in rows if r.intensity_signal})
    return [
        name, len(rows),
        sum(r.energy_j for r in rows) / JOULES_PER_KWH,
        sum(hosts) / JOULES_PER_KWH if hosts else None,
        sum(r.carbon_g for r in rows), sum(r.embodied_carbon_g for r in rows),
        sum(r.water_l for r in rows), sum(costs) if costs else None,
        sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows),
        p50, p95, sum(r.energy_measured for r in rows) / len(rows) if rows else None,
        ", ".join(signals) or None,
    ]


def totals_section(data: ReportData) -> Section:
    """The whole job in one row."""
    sources = sorted({r.energy_source for r in data.results})
    return Section("Totals", COLUMNS, [summarise("all", data.results)],
                   note=f"energy sources: {', '.join(sources) or 'none'}")


def devices_section(data: ReportData) -> Section:
    """One row per device, in name order."""
    by_device: dict[str, list[Result]] = {}
    for r in data.results:
        by_device.setdefault(r.device, []).append(r)
    return Section("Per device", COLUMNS,
                   [summarise(d, rows) for d, rows in sorted(by_device.items())])


MODEL_COLUMNS = ["model", "quality", *COLUMNS[1:]]


def models_section(data: ReportData) -> Section:
    """One row per served model that answered, with its quality score next to its carbon.

    The score is the one the router weighed when it chose the model (kept in each batch's
    decision record), so the report needs no registry. A batch routed before models were
    chosen ran its device's one model: ``(device's model)``.
    """
    model_of = {b.id: b.model or "(device's model)" for b in data.batches}
    quality = {b.model: _quality(b) for b in data.batches if b.model}
    by_model: dict[str, list[Result]] = {}
    for r in data.results:
        by_model.setdefault(model_of.get(r.batch_id, "(device's model)"), []).append(r)
    rows = [[name, quality.get(name), *summarise(name, got)[1:]]
            for name, got in sorted(by_model.items())]
    return Section("Per model", MODEL_COLUMNS, rows,
                   note="quality: the model's score in the device registry (bundled models: "
                        "PIQA 0-shot accuracy, % from the model cards; see `ecobatch devices`)")


def _quality(batch: Batch) -> float | None:
    """The chosen model's quality score in the batch's decision record."""
    return decision_quality(batch.device, batch.model, batch.scores)


def decisions_section(data: ReportData) -> Section:
    """Why each batch went where it did (the router's stored reason and candidate scores)."""
    rows, note = decision_rows(data.batches)
    return Section("Routing decisions", DECISION_COLUMNS, rows, note=note)


SECTION_BUILDERS: list[SectionBuilder] = [totals_section, devices_section, models_section,
                                           decisions_section]


def build_report(data: ReportData,
                 builders: Sequence[SectionBuilder] | None = None) -> list[Section]:
    """Every section of the report, in order."""
    return [build(data) for build in (SECTION_BUILDERS if builders is None else builders)]


def job_hours(data: ReportData) -> tuple[datetime, datetime] | None:
    """First and last result time of the job (UTC), or None without results."""
    times = [r.created_at for r in data.results]
    return (min(times), max(times)) if times else None
