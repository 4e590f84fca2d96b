"""Design points and the pillar ablation: the same program under different objectives.

EcoServe compares its carbon-optimal design with performance-, energy- and cost-optimised
ones at the same SLOs. Here each is the same MILP (same demand, SLO, deadline and capacity
constraints) with another objective. A second solve breaks ties among its optima (by cost, or
latency for the cost design), weighted to ``TIE_BREAK`` of the objective, and is kept only if
it moves the objective by less than that share. The carbon design therefore emits no more
than any other design point, up to the MIP gap and that share. The ablation solves the
carbon design with each pillar turned off in turn; each is a restriction of the full program,
so none can emit less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError
from router.provision.lp import Solution, solve
from router.provision.milp import PILLARS, Pillars, Problem, Program, build

TIE_BREAK = 1e-4
OBJECTIVES: dict[str, tuple[str, str]] = {
    "carbon": ("carbon_kg", "cost_usd"),
    "performance": ("latency_request_s", "cost_usd"),
    "energy": ("energy_kwh", "cost_usd"),
    "cost": ("cost_usd", "latency_request_s"),
}


@dataclass(frozen=True)
class FleetEntry:
    """Devices of one unit (a type at a site, new or owned) in service each year."""

    type_name: str
    site: str
    owned: bool
    age_years: float
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Design:
    """One solved design point.

    Attributes:
        name: ``carbon``, ``performance``, ``energy``, ``cost`` or an ablation's name.
        metrics: horizon totals (see :data:`router.provision.metrics.METRICS`) plus
            ``mean_latency_s`` (online, predicted) and ``host_cpu_share`` (of offline tokens).
        fleet: devices per unit and year (units with none left out).
        online_batch: the fleet's online batch size.
        offline_batch: each serving type's offline batch size.
        solve_s: wall seconds of both solves.
        gap: the solver's relative MIP gap at the end.
    """

    name: str
    metrics: dict[str, float]
    fleet: list[FleetEntry]
    online_batch: int
    offline_batch: dict[str, int]
    solve_s: float
    gap: float

    @property
    def carbon_kg(self) -> float:
        """Operational plus embodied kgCO2e over the horizon."""
        return self.metrics["carbon_kg"]


def solve_design(problem: Problem, name: str, pillars: Pillars | None = None,
                 objective: str | None = None) -> Design:
    """Solve the design that minimises ``objective`` (default: ``name``'s) with ``pillars``.

    Raises:
        ConfigError: an infeasible program, or none solved within the time limit.
    """
    prog = build(problem, pillars or Pillars())
    primary, secondary = (prog.metrics[k] for k in OBJECTIVES[objective or name])
    gap, limit = problem.mip_rel_gap, problem.time_limit_s
    first = solve(prog.space, prog.rows, primary, mip_rel_gap=gap, time_limit_s=limit)
    # Among (near-)optima, prefer the better secondary: weighted so that at the first solution
    # it is TIE_BREAK of the objective, which moves the primary by at most about that share.
    p_value, s_value = float(primary @ first.v), float(secondary @ first.v)
    if s_value <= 0 or p_value <= 0:
        return _design(problem, prog, name, first, first.solve_s)
    weight = TIE_BREAK * p_value / s_value
    second = solve(prog.space, prog.rows, primary + weight * secondary, mip_rel_gap=gap,
                   time_limit_s=limit)
    best = second if float(primary @ second.v) <= p_value * (1 + TIE_BREAK) else first
    return _design(problem, prog, name, best, first.solve_s + second.solve_s)


def _design(problem: Problem, prog: Program, name: str, sol: Solution, solve_s: float) -> Design:
    v = sol.v
    metrics = {k: float(vec @ v) for k, vec in prog.metrics.items()}
    work = problem.workload
    online, offline = work.tokens_per_h()
    growth = float(work.growth().sum())
    day_h = 365.0 * work.block_h
    requests = float(online.sum()) * growth * day_h / work.tokens_per_request
    metrics["mean_latency_s"] = metrics["latency_request_s"] / requests if requests else 0.0
    offline_total = float(offline.sum()) * growth
    metrics["host_cpu_share"] = float(v[prog.xc].sum()) / offline_total if offline_total else 0.0
    batches = work.batch_sizes
    online_batch = batches[int(np.argmax(v[prog.z_on]))]
    served = v[prog.x[:, :, 1]].sum(axis=(2, 3))  # (units, batches)
    offline_batch = {}
    for t, dt in enumerate(problem.catalogue.types):
        mine = [k for k, u in enumerate(prog.units) if u.type_index == t]
        if mine and served[mine].sum() > 1e-6:
            offline_batch[dt.name] = batches[int(np.argmax(served[mine].sum(axis=0)))]
    return Design(name, metrics, _fleet(problem, prog, v), online_batch, offline_batch,
                  solve_s, sol.gap)


def _fleet(problem: Problem, prog: Program, v: np.ndarray) -> list[FleetEntry]:
    cat = problem.catalogue
    out = []
    for k, unit in enumerate(prog.units):
        counts = tuple(round(c) for c in v[prog.n[k]])
        if any(counts):
            owned = unit.owned
            out.append(FleetEntry(cat.types[unit.type_index].name, cat.sites[unit.site_index].name,
                                  owned is not None, owned.age_years if owned else 0.0, counts))
    return out


def design_points(problem: Problem) -> list[Design]:
    """The carbon-optimal design, then the performance-, energy- and cost-optimised ones."""
    return [solve_design(problem, name) for name in OBJECTIVES]


@dataclass(frozen=True)
class PillarEffect:
    """The carbon design with one pillar off, and what that pillar saved.

    Attributes:
        pillar: the pillar turned off.
        design: the carbon design without it; None when the SLO cannot be met without it.
        saved_kg: carbon without the pillar minus with all pillars (>= 0; inf if infeasible).
        saved_share: of the carbon without the pillar (1.0 if infeasible).
    """

    pillar: str
    design: Design | None
    saved_kg: float
    saved_share: float


def ablation(problem: Problem, base: Design) -> list[PillarEffect]:
    """Solve the carbon design with each pillar off in turn."""
    effects = []
    for pillar in PILLARS:
        try:
            off = solve_design(problem, f"carbon without {pillar}", Pillars().without(pillar),
                               objective="carbon")
        except ConfigError:
            # Without this pillar no fleet meets the SLO: it is indispensable here.
            effects.append(PillarEffect(pillar, None, float("inf"), 1.0))
            continue
        saved = off.carbon_kg - base.carbon_kg
        effects.append(PillarEffect(pillar, off, saved, saved / off.carbon_kg if off.carbon_kg else 0))
    return effects


def reduction(carbon: Design, other: Design) -> float:
    """Share of ``other``'s carbon the carbon design avoids (0.3 = 30% less)."""
    return 1.0 - carbon.carbon_kg / other.carbon_kg if other.carbon_kg else 0.0

