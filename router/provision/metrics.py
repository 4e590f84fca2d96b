"""The provisioning program's metrics as coefficient vectors: ``metric = vector @ solution``.

Totals over the horizon, 365 days a year. A device in service draws its idle and host watts
all day; serving adds its predicted J/token above idle. Facility energy is IT energy x the
hour's PUE; operational carbon, cost and water follow :mod:`pipeline.accounting.account`'s formulas
(intensity and price on facility energy; water = IT kWh x (WUE + PUE x grid water)). Embodied
carbon and purchase price are amortised linearly, per year in service, over the type's
lifetime; an owned device past its lifetime carries neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from router.provision.lp import Index, Vector
from router.provision.workload import SiteGrid

if TYPE_CHECKING:
    from router.provision.milp import Problem, Program, Unit

DAYS_PER_YEAR = 365.0
JOULES_PER_KWH = 3.6e6
METRICS = ("carbon_op_kg", "carbon_emb_kg", "carbon_kg", "energy_kwh", "it_energy_kwh",
           "cost_usd", "water_l", "latency_request_s")


def metric_vectors(problem: Problem, prog: Program) -> dict[str, Vector]:
    """Coefficient vectors of every metric in :data:`METRICS`."""
    vec = {k: np.zeros(prog.space.n) for k in METRICS}
    for k, unit in enumerate(prog.units):
        _device_years(problem, prog, k, unit, vec)
        _service(problem, prog, k, unit, vec)
    vec["carbon_kg"] = vec["carbon_op_kg"] + vec["carbon_emb_kg"]
    return vec


def _energy_chain(vec: dict[str, Vector], cols: Index | int, it_kwh: Vector, grid: SiteGrid,
                  hours: slice | int) -> None:
    """Add IT kWh at ``cols`` (served in ``hours``) and what follows from it."""
    pue, intensity = grid.pue[hours], grid.intensity_g_per_kwh[hours]
    vec["it_energy_kwh"][cols] += it_kwh
    vec["energy_kwh"][cols] += it_kwh * pue
    vec["carbon_op_kg"][cols] += it_kwh * pue * intensity / 1000.0
    vec["cost_usd"][cols] += it_kwh * pue * grid.price_usd_per_kwh[hours]
    vec["water_l"][cols] += it_kwh * grid.water_l_per_kwh[hours]


def _device_years(problem: Problem, prog: Program, k: int, unit: Unit,
                  vec: dict[str, Vector]) -> None:
    """Per device and year in service: its static energy, amortised embodied and price."""
    t = problem.catalogue.types[unit.type_index]
    grid = problem.grids[unit.site_index]
    work = problem.workload
    static_kwh_per_slot = (t.idle_power_w + t.host_power_w) / 1000.0 * work.block_h * DAYS_PER_YEAR
    for y in range(work.horizon_years):
        col = prog.n[k, y]
        # Summing the chain slot by slot is exact: the static draw is the same each hour.
        for h in range(work.n_slots):
            _energy_chain(vec, col, np.asarray(static_kwh_per_slot), grid, h)
        age = 0.0 if unit.owned is None else unit.owned.age_years
        amortising = 1.0 if age + y < t.lifetime_years else 0.0
        vec["carbon_emb_kg"][col] += t.embodied_kgco2e / t.lifetime_years * amortising
        vec["cost_usd"][col] += t.price_usd / t.lifetime_years * amortising


def _service(problem: Problem, prog: Program, k: int, unit: Unit, vec: dict[str, Vector]) -> None:
    """Per token served: busy energy above idle (GPU or host CPUs), and online latency."""
    t = problem.catalogue.types[unit.type_index]
    grid = problem.grids[unit.site_index]
    work = problem.workload
    days_h = DAYS_PER_YEAR * work.block_h  # hours a slot's hourly rate runs per year
    slots = work.n_slots
    cpu_j = t.host_cpu_power_w / t.host_cpu_tokens_per_s if t.host_cpu_tokens_per_s > 0 else 0.0
    for j, rate in enumerate(problem.rates[unit.type_index]):
        busy_j = max(rate.j_per_token - t.idle_power_w / rate.tokens_per_s, 0.0)
        kwh = busy_j / JOULES_PER_KWH * days_h
        for y in range(work.horizon_years):
            for c in (0, 1):
                _energy_chain(vec, prog.x[k, j, c, :, y], np.full(slots, kwh), grid, slice(None))
            vec["latency_request_s"][prog.x[k, j, 0, :, y]] += (
                (rate.latency_s + work.fill_s(rate.batch)) / work.tokens_per_request * days_h)
    for y in range(work.horizon_years):
        _energy_chain(vec, prog.xc[k, :, y], np.full(slots, cpu_j / JOULES_PER_KWH * days_h),
                      grid, slice(None))
