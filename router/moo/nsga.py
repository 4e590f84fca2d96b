"""NSGA-II (pymoo) over per-site, per-hour allocation and model choice.

The genes are the priorities and caps of :func:`router.moo.instance.decode`, in [0, 1]. Half
the first population has full caps (pure greedy fills). Capacity is a constraint (pymoo's
constraint domination). Deterministic for a seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.optimize import minimize

from router.moo.instance import OBJECTIVES, MooInstance, decode, evaluate


class AllocationProblem(Problem):
    """The instance as a pymoo problem: vectorised over the population."""

    def __init__(self, inst: MooInstance) -> None:
        n_s, n_h = inst.scenario.shape
        super().__init__(n_var=inst.n_var, n_obj=len(OBJECTIVES), n_ieq_constr=n_s * n_h,
                         xl=0.0, xu=1.0)
        self.inst = inst

    def _evaluate(self, x: NDArray[np.float64], out: dict[str, Any], *args: Any,
                  **kwargs: Any) -> None:
        out["F"], out["G"] = evaluate(self.inst, decode(self.inst, x))


@dataclass(frozen=True)
class Front:
    """Non-dominated feasible solutions found by a method, and what finding them cost.

    Attributes:
        method: ``nsga2`` or ``sweep``.
        objectives: (points, 5) in :data:`~router.moo.instance.OBJECTIVES` order.
        tokens: (points, pairs, hours) allocations.
        wall_s: wall seconds of the search.
        evaluations: objective evaluations (NSGA-II) or LP solves (sweep).
    """

    method: str
    objectives: NDArray[np.float64]
    tokens: NDArray[np.float64]
    wall_s: float
    evaluations: int


def initial_population(inst: MooInstance, size: int, seed: int) -> NDArray[np.float64]:
    """Random priorities; caps random for half the population and full for the other half
    (pure greedy fills, the kind of allocation the LP's optima are)."""
    rng = np.random.default_rng(seed)
    genes = rng.random((size, inst.n_var))
    genes[: size // 2, inst.n_var // 2 :] = 1.0
    return np.asarray(genes, np.float64)


def nsga2_front(inst: MooInstance, *, pop_size: int = 100, generations: int = 200,
                seed: int = 0) -> Front:
    """Run NSGA-II on ``inst`` and return its final non-dominated feasible set."""
    began = time.perf_counter()
    algorithm = NSGA2(pop_size=pop_size, sampling=initial_population(inst, pop_size, seed),
                      eliminate_duplicates=True)
    res = minimize(AllocationProblem(inst), algorithm, ("n_gen", generations), seed=seed,
                   verbose=False)
    x = np.atleast_2d(res.X) if res.X is not None else np.zeros((0, inst.n_var))
    tokens = decode(inst, x)
    f, g = evaluate(inst, tokens)
    feasible = np.all(g <= 1e-9, axis=1)
    return Front("nsga2", f[feasible], tokens[feasible], time.perf_counter() - began,
                 pop_size * generations)
