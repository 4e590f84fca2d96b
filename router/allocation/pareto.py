"""Multi-objective search over carbon, latency (delay), water and cost: the Pareto front.

After SLIT's co-optimisation of TTFT, carbon, water and energy cost across sites. The search
solves the allocation LP (:mod:`router.allocation.lp`) for many weight vectors over the four
objectives (each objective scaled by its own optimum, so a weight is a unitless share): the
corners (one objective alone), a simplex lattice and seeded random Dirichlet weights. Every
solution is a supported Pareto point; dominated and duplicate points are dropped, so what is
returned is non-dominated. Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from router.allocation.lp import OBJECTIVES, Allocation, Scenario, objective_scales, solve_weighted


@dataclass(frozen=True)
class ParetoPoint:
    """One non-dominated allocation and the weights that found it."""

    weights: dict[str, float]
    objectives: dict[str, float]
    allocation: Allocation


@dataclass(frozen=True)
class ParetoFront:
    """The non-dominated points, and what the search cost."""

    points: list[ParetoPoint]
    solves: int
    solve_s: float

    def matrix(self) -> NDArray[np.float64]:
        """Objective values, one row per point, columns in :data:`OBJECTIVES` order."""
        return np.array([[p.objectives[k] for k in OBJECTIVES] for p in self.points])


def weight_vectors(lattice_steps: int, n_random: int, seed: int) -> list[dict[str, float]]:
    """Corners, a simplex lattice with ``lattice_steps`` divisions, and random Dirichlet weights."""
    vectors: list[tuple[float, ...]] = []
    for combo in itertools.product(range(lattice_steps + 1), repeat=len(OBJECTIVES)):
        if sum(combo) == lattice_steps:
            vectors.append(tuple(c / lattice_steps for c in combo))
    rng = np.random.default_rng(seed)
    vectors += [tuple(float(v) for v in rng.dirichlet(np.ones(len(OBJECTIVES))))
                for _ in range(n_random)]
    return [dict(zip(OBJECTIVES, v, strict=True)) for v in vectors]


def dominates(a: NDArray[np.float64], b: NDArray[np.float64], rel_eps: float = 1e-9) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (minimising)."""
    slack = rel_eps * np.maximum(np.abs(a), np.abs(b))
    return bool(np.all(a <= b + slack) and np.any(a < b - slack))


def non_dominated(values: NDArray[np.float64]) -> list[int]:
    """Indices of rows not dominated by any other row, duplicates kept once."""
    keep: list[int] = []
    for i, row in enumerate(values):
        if any(dominates(values[j], row) for j in range(len(values)) if j != i):
            continue
        if any(np.allclose(values[j], row, rtol=1e-9, atol=0.0) for j in keep):
            continue
        keep.append(i)
    return keep


def pareto_front(sc: Scenario, *, lattice_steps: int = 3, n_random: int = 16,
                 seed: int = 0) -> ParetoFront:
    """Search the Pareto front of ``sc`` over cost, carbon, delay and water.

    Raises:
        ConfigError: a bad scenario or an infeasible LP.
    """
    began = time.perf_counter()
    scales = objective_scales(sc)
    # A tiny weight on every objective keeps each weighted optimum from being weakly dominated.
    floor = 1e-4
    found: list[ParetoPoint] = []
    vectors = weight_vectors(lattice_steps, n_random, seed)
    for w in vectors:
        weights = {k: v + floor for k, v in w.items()}
        alloc = solve_weighted(sc, weights, scales)
        found.append(ParetoPoint(w, alloc.objectives, alloc))
    values = np.array([[p.objectives[k] for k in OBJECTIVES] for p in found])
    points = [found[i] for i in non_dominated(values)]
    return ParetoFront(points, len(vectors) + len(OBJECTIVES), time.perf_counter() - began)
