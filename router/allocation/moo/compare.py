"""NSGA-II against the weighted-sum LP sweep (:mod:`router.allocation.pareto`) on the same instance.

The sweep solves the allocation LP the way ecobatch's ``--pareto`` does; to run on an instance
with models it sees each offered (site, model) pair as a site of its own, with that model's
speed and energy and an equal split of the site's capacity and renewables (a feasible
linearisation: the LP can hold neither the fixed charge nor queueing nor quality). Every sweep
solution is then evaluated with the instance's exact objectives, like NSGA-II's.

Compared: hypervolume (pymoo's HV on objectives min-max normalised over both fronts together,
reference point 1.1 in each), how many of each method's points no point of the other method
weakly dominates, and the wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pymoo.indicators.hv import HV

from router.allocation.lp import Scenario
from router.allocation.moo.instance import MooInstance, evaluate
from router.allocation.moo.nsga import Front
from router.allocation.pareto import non_dominated, pareto_front

HV_REFERENCE = 1.1


def lp_scenario(inst: MooInstance) -> Scenario:
    """The instance as an allocation LP: one LP site per offered (site, model) pair."""
    sc, pairs = inst.scenario, inst.pairs
    site = np.array([s for s, _ in pairs])
    share = 1.0 / inst.offers.sum(axis=1)[site]
    speed = np.array([inst.models[m].speed for _, m in pairs])
    energy = np.array([inst.models[m].energy for _, m in pairs])
    return Scenario(
        sites=[f"{sc.sites[s]}/{inst.models[m].name}" for s, m in pairs], demand=sc.demand,
        capacity=sc.capacity[site] * speed * share, kwh_per_token=sc.kwh_per_token[site] * energy,
        pue=sc.pue[site], intensity_g_per_kwh=sc.intensity_g_per_kwh[site],
        price_usd_per_kwh=sc.price_usd_per_kwh[site], water_l_per_kwh=sc.water_l_per_kwh[site],
        latency_s=sc.latency_s[site] + inst.ttft_base_s[site] / speed,
        renewable_kwh=sc.renewables()[site] * share[:, None], water_budget_l=sc.water_budget_l,
        allow_defer=False)


def sweep_front(inst: MooInstance, *, lattice_steps: int = 3, n_random: int = 16,
                seed: int = 0) -> Front:
    """The LP sweep's solutions, evaluated exactly; the non-dominated feasible ones."""
    began = time.perf_counter()
    front = pareto_front(lp_scenario(inst), lattice_steps=lattice_steps, n_random=n_random,
                         seed=seed)
    tokens = np.array([p.allocation.tokens for p in front.points])
    f, g = evaluate(inst, tokens)
    keep = [i for i in non_dominated(f) if np.all(g[i] <= 1e-9)]
    return Front("sweep", f[keep], tokens[keep], time.perf_counter() - began, front.solves)


@dataclass(frozen=True)
class Comparison:
    """Figures of NSGA-II against the sweep on one instance."""

    hv_nsga2: float
    hv_sweep: float
    nsga2_points: int
    sweep_points: int
    nsga2_only: int  # NSGA-II points no sweep point weakly dominates
    sweep_only: int  # sweep points no NSGA-II point weakly dominates
    nsga2_s: float
    sweep_s: float


def compare_fronts(nsga2: Front, sweep: Front) -> Comparison:
    """Hypervolumes, exclusive points and times of two fronts of one instance."""
    both = np.vstack([nsga2.objectives, sweep.objectives])
    low, high = both.min(axis=0), both.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    hv = HV(ref_point=np.full(both.shape[1], HV_REFERENCE))

    def volume(f: NDArray[np.float64]) -> float:
        return float(hv((f - low) / span)) if len(f) else 0.0

    return Comparison(volume(nsga2.objectives), volume(sweep.objectives), len(nsga2.objectives),
                      len(sweep.objectives), _not_covered(nsga2.objectives, sweep.objectives),
                      _not_covered(sweep.objectives, nsga2.objectives), nsga2.wall_s, sweep.wall_s)


def _not_covered(points: NDArray[np.float64], by: NDArray[np.float64]) -> int:
    """How many of ``points`` no row of ``by`` weakly dominates (relative tolerance 1e-9)."""
    count = 0
    for p in points:
        slack = 1e-9 * np.maximum(np.abs(p), np.abs(by))
        if not np.any(np.all(by <= p + slack, axis=1)):
            count += 1
    return count
