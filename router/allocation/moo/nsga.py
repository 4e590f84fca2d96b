"""NSGA-II (pymoo) over per-site, per-hour allocation and model choice.

The genes are the priorities and caps of :func:`router.allocation.moo.instance.decode`, in [0, 1]. Half
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
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from router.allocation.moo.instance import OBJECTIVES, MooInstance, decode, encode, evaluate

ARCHIVE_MERGE_EVERY = 20  # evaluated batches between prunings of the archive


class AllocationProblem(Problem):
    """The instance as a pymoo problem: vectorised over the population.

    Every feasible solution evaluated is kept in an archive, so that the front returned is the
    non-dominated set of all of them (the population keeps at most ``pop_size`` points, and in
    five objectives crowding drops non-dominated ones).
    """

    def __init__(self, inst: MooInstance) -> None:
        n_s, n_h = inst.scenario.shape
        super().__init__(n_var=inst.n_var, n_obj=len(OBJECTIVES), n_ieq_constr=n_s * n_h,
                         xl=0.0, xu=1.0)
        self.inst = inst
        self.archive: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []

    def _evaluate(self, x: NDArray[np.float64], out: dict[str, Any], *args: Any,
                  **kwargs: Any) -> None:
        tokens = decode(self.inst, x)
        f, g = evaluate(self.inst, tokens)
        out["F"], out["G"] = f, g
        feasible = np.all(g <= 1e-9, axis=1)
        if feasible.any():
            self.archive.append((f[feasible], tokens[feasible]))
            if len(self.archive) >= ARCHIVE_MERGE_EVERY:
                self.archive = [self.front()]

    def front(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The non-dominated (objectives, allocations) of the archive, duplicates dropped."""
        if not self.archive:
            n_pairs, n_h = len(self.inst.pairs), self.inst.scenario.shape[1]
            return np.zeros((0, len(OBJECTIVES))), np.zeros((0, n_pairs, n_h))
        f = np.vstack([a for a, _ in self.archive])
        tokens = np.concatenate([t for _, t in self.archive])
        keep = NonDominatedSorting().do(f, only_non_dominated_front=True)
        _, unique = np.unique(np.round(f[keep], 9), axis=0, return_index=True)
        keep = np.asarray(keep)[np.sort(unique)]
        return f[keep], tokens[keep]


@dataclass(frozen=True)
class Front:
    """Non-dominated feasible solutions found by a method, and what finding them cost.

    Attributes:
        method: ``nsga2``, ``nsga2+lp`` (seeded with the sweep's solutions) or ``sweep``.
        objectives: (points, 5) in :data:`~router.allocation.moo.instance.OBJECTIVES` order.
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
                seed: int = 0, seeds: NDArray[np.float64] | None = None) -> Front:
    """Run NSGA-II on ``inst`` and return its final non-dominated feasible set.

    Args:
        inst: the instance.
        pop_size: individuals per generation.
        generations: generations to run.
        seed: the random seed.
        seeds: allocations (P, pairs, H) to start from, e.g. the LP sweep's; they replace the
            first individuals of the random population (method ``nsga2+lp``).
    """
    began = time.perf_counter()
    population = initial_population(inst, pop_size, seed)
    if seeds is not None and len(seeds):
        encoded = encode(inst, seeds)[:pop_size]
        population[: len(encoded)] = encoded
    algorithm = NSGA2(pop_size=pop_size, sampling=population, eliminate_duplicates=True)
    problem = AllocationProblem(inst)
    minimize(problem, algorithm, ("n_gen", generations), seed=seed, verbose=False)
    f, tokens = problem.front()
    return Front("nsga2" if seeds is None else "nsga2+lp", f, tokens,
                 time.perf_counter() - began, pop_size * generations)
