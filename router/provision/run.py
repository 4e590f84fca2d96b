"""One provisioning study: design points, pillar ablation, simulator check, and their JSON."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from pipeline.grid.trace import GridConditions
from router.provision.catalogue import Catalogue
from router.provision.designs import Design, PillarEffect, ablation, design_points, reduction
from router.provision.milp import Problem
from router.provision.validate import Validation, validate
from router.provision.workload import Workload, site_grids, type_rates


@dataclass(frozen=True)
class Study:
    """What to study and how.

    Attributes:
        catalogue: sites, candidate types and owned devices.
        workload: the load and its targets.
        grid: carbon, price and temperature by zone and hour.
        start: the simulated start of the validation run.
        fleet_path: where the carbon design's fleet TOML goes (None: no validation).
        validate_hours: hours of online load the simulator replays.
        ablate: whether to run the pillar ablation.
        time_limit_s: per MILP solve.
        seed: the draw of online requests for the validation.
    """

    catalogue: Catalogue
    workload: Workload
    grid: GridConditions
    start: datetime
    fleet_path: Path | None = None
    validate_hours: int = 1
    ablate: bool = True
    time_limit_s: float = 60.0
    seed: int = 0


@dataclass
class StudyResult:
    """Designs (carbon first), the ablation, the validation and the wall time."""

    designs: list[Design]
    effects: list[PillarEffect] = field(default_factory=list)
    validation: Validation | None = None
    wall_s: float = 0.0

    @property
    def carbon(self) -> Design:
        """The carbon-optimal design."""
        return self.designs[0]


def problem_for(study: Study, engine: Engine | None = None) -> Problem:
    """The program's inputs: grid per site and rates per type.

    Raises:
        ConfigError: an unknown profile or zone.
    """
    cat, work = study.catalogue, study.workload
    return Problem(cat, work, site_grids(cat.sites, cat.types, study.grid, work.block_h),
                   [type_rates(t, work, engine) for t in cat.types],
                   time_limit_s=study.time_limit_s)


def run_study(study: Study, engine: Engine | None = None) -> StudyResult:
    """Solve the design points, the ablation and the simulator check of ``study``.

    Raises:
        ConfigError: bad inputs, an infeasible program, or a failed simulation.
    """
    began = time.perf_counter()
    problem = problem_for(study, engine)
    result = StudyResult(design_points(problem))
    if study.ablate:
        result.effects = ablation(problem, result.carbon)
    if study.fleet_path is not None and study.validate_hours > 0:
        result.validation = validate(study.catalogue, result.carbon, study.workload, study.grid,
                                     study.fleet_path, study.start, hours=study.validate_hours,
                                     seed=study.seed)
    result.wall_s = time.perf_counter() - began
    return result


def result_json(result: StudyResult) -> dict[str, Any]:
    """Every figure of ``result`` as JSON-ready data."""
    carbon = result.carbon
    doc: dict[str, Any] = {
        "designs": [_design_json(d, carbon) for d in result.designs],
        "ablation": [_effect_json(e, carbon) for e in result.effects],
        "wall_s": result.wall_s,
        "energy": "estimated from the catalogue's profiles, not measured",
    }
    v = result.validation
    if v is not None:
        doc["validation"] = {"fleet": str(v.fleet_path), "slo_holds": v.slo_holds,
                             "slo_attainment": v.slo_attainment, **v.summary.row()}
    return doc


def _effect_json(e: PillarEffect, carbon: Design) -> dict[str, Any]:
    if e.design is None:
        return {"pillar": e.pillar, "feasible_without": False}
    return {"pillar": e.pillar, "feasible_without": True, "carbon_kg_without": e.design.carbon_kg,
            "saved_kg": e.saved_kg, "saved_share": e.saved_share,
            "design": _design_json(e.design, carbon)}


def _design_json(d: Design, carbon: Design) -> dict[str, Any]:
    return {"name": d.name, "metrics": d.metrics, "carbon_reduction_by_carbon_design":
            reduction(carbon, d), "online_batch": d.online_batch,
            "offline_batch": d.offline_batch, "fleet": [asdict(f) for f in d.fleet],
            "solve_s": d.solve_s, "mip_gap": d.gap}
