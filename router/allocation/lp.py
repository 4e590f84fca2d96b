"""Optimal allocation of token load to sites and hours, as a linear program (scipy's HiGHS).

After Green-LLM (renewables, prices, carbon, water as a constraint, lexicographic cost -> carbon
-> delay) and the temperature-aware scheduling work (PUE and water depend on the hour's ambient
temperature). Variables, all >= 0, for sites ``s`` and hours ``h``:

- ``x[s,h]``: tokens served at site ``s`` in hour ``h`` (at most the site's capacity);
- ``g[s,h]``: grid kWh bought, ``x * kwh_per_token * PUE(T[s,h]) - renewable[s,h] <= g`` and
  ``g <= x * kwh_per_token * PUE(T[s,h])`` (prices can be negative);
- ``b[h]``: tokens deferred from hour ``h`` to ``h + 1`` (only with ``allow_defer``; none may be
  left after the last hour).

Every hour's demand is met: ``sum_s x[s,h] + b[h] - b[h-1] = demand[h]``. Objectives, each linear:
cost (USD of grid energy), carbon (gCO2e of grid energy; renewables count as zero), delay (site
latency x tokens, plus one hour per deferred token) and water (litres: site WUE plus PUE x the
zone's generation water, on all of the site's energy, so renewables do not hide water). A water
budget, when given, is a constraint. Objectives combine lexicographically (each later one
optimised with the earlier ones held within a relative tolerance of their optimum) or as a
weighted sum of objectives each scaled by its own optimum.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import linprog

from pipeline.errors import ConfigError

OBJECTIVES = ("cost", "carbon", "delay", "water")
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Scenario:
    """Sites x hours with everything the LP needs, per token where it scales with load.

    Attributes:
        sites: site names.
        demand: tokens arriving in each hour, shape (H,).
        capacity: tokens each site can serve per hour, shape (S,).
        kwh_per_token: IT energy per token at each site, shape (S,).
        pue: PUE of each site at each hour's temperature, shape (S, H).
        intensity_g_per_kwh: grid carbon intensity, shape (S, H).
        price_usd_per_kwh: electricity price, shape (S, H).
        water_l_per_kwh: litres per kWh of IT energy (WUE + PUE x generation water), (S, H).
        latency_s: delay of a token at each site (network + service), shape (S,).
        renewable_kwh: on-site renewable energy per hour, shape (S, H).
        water_budget_l: total litres allowed over the horizon; None for no limit.
        allow_defer: whether load may move to later hours.
    """

    sites: list[str]
    demand: NDArray[np.float64]
    capacity: NDArray[np.float64]
    kwh_per_token: NDArray[np.float64]
    pue: NDArray[np.float64]
    intensity_g_per_kwh: NDArray[np.float64]
    price_usd_per_kwh: NDArray[np.float64]
    water_l_per_kwh: NDArray[np.float64]
    latency_s: NDArray[np.float64]
    renewable_kwh: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    water_budget_l: float | None = None
    allow_defer: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(sites, hours)."""
        return len(self.sites), int(self.demand.shape[0])

    def renewables(self) -> NDArray[np.float64]:
        """On-site renewable kWh per site and hour (zeros when none were given)."""
        return self.renewable_kwh if self.renewable_kwh.size else np.zeros(self.shape)

    def check(self) -> None:
        """Raise ConfigError naming the first field with a wrong shape or a negative value."""
        n_s, n_h = self.shape
        expect = {"capacity": (n_s,), "kwh_per_token": (n_s,), "latency_s": (n_s,),
                  "pue": (n_s, n_h), "intensity_g_per_kwh": (n_s, n_h),
                  "price_usd_per_kwh": (n_s, n_h), "water_l_per_kwh": (n_s, n_h)}
        for name, shape in expect.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise ConfigError(f"scenario field {name!r}: shape {value.shape}, expected {shape}")
        for name in ("demand", "capacity", "kwh_per_token", "pue", "water_l_per_kwh"):
            if np.any(getattr(self, name) < 0):
                raise ConfigError(f"scenario field {name!r}: negative value")


@dataclass(frozen=True)
class Allocation:
    """A solved allocation.

    Attributes:
        tokens: tokens served per site and hour, shape (S, H).
        grid_kwh: grid energy bought per site and hour.
        deferred: tokens carried from each hour to the next, shape (H,).
        objectives: cost (USD), carbon (g), delay (token-seconds), water (L) of the solution.
        solve_s: wall seconds of all LP solves.
        solves: how many LPs were solved (lexicographic: one per objective).
    """

    tokens: NDArray[np.float64]
    grid_kwh: NDArray[np.float64]
    deferred: NDArray[np.float64]
    objectives: dict[str, float]
    solve_s: float
    solves: int

    def site_shares(self) -> NDArray[np.float64]:
        """Share of each hour's served tokens per site, shape (S, H); 0 where none is served."""
        total = self.tokens.sum(axis=0, keepdims=True)
        return np.divide(self.tokens, total, out=np.zeros_like(self.tokens), where=total > 0)


@dataclass
class LinearProgram:
    """An LP in scipy's form: one cost vector per objective, ``A_ub v <= b_ub``,
    ``A_eq v = b_eq``, bounds per variable (for a :class:`Scenario`: x (S*H), g (S*H), then b
    (H) when deferring)."""

    costs: dict[str, NDArray[np.float64]]
    a_ub: sp.csr_matrix
    b_ub: NDArray[np.float64]
    a_eq: sp.csr_matrix
    b_eq: NDArray[np.float64]
    bounds: list[tuple[float, float | None]]


def _build(sc: Scenario) -> LinearProgram:
    sc.check()
    n_s, n_h = sc.shape
    n = n_s * n_h
    n_b = n_h if sc.allow_defer else 0
    eye = sp.identity(n, format="csr")
    energy = sp.diags((sc.kwh_per_token[:, None] * sc.pue).ravel())
    # g covers what renewables do not, and never exceeds the energy used: with a negative
    # price an unbounded g would otherwise "earn" without limit.
    rows_ub = [sp.hstack([energy, -eye, sp.csr_matrix((n, n_b))]),
               sp.hstack([-energy, eye, sp.csr_matrix((n, n_b))])]
    rhs_ub = [sc.renewables().ravel(), np.zeros(n)]
    water = (sc.kwh_per_token[:, None] * sc.water_l_per_kwh).ravel()
    if sc.water_budget_l is not None:
        rows_ub.append(sp.csr_matrix(np.concatenate([water, np.zeros(n + n_b)])[None, :]))
        rhs_ub.append(np.array([sc.water_budget_l]))
    balance = sp.kron(sp.csr_matrix(np.ones((1, n_s))), sp.identity(n_h))
    parts = [balance, sp.csr_matrix((n_h, n))]
    if n_b:
        parts.append(sp.identity(n_h) - sp.eye(n_h, k=-1))
    pad = np.zeros(n + n_b)
    delay_x = np.repeat(sc.latency_s, n_h)
    costs = {
        "cost": np.concatenate([np.zeros(n), sc.price_usd_per_kwh.ravel(), np.zeros(n_b)]),
        "carbon": np.concatenate([np.zeros(n), sc.intensity_g_per_kwh.ravel(), np.zeros(n_b)]),
        "delay": np.concatenate([delay_x, np.zeros(n), np.full(n_b, SECONDS_PER_HOUR)]),
        "water": np.concatenate([water, pad]),
    }
    cap = np.repeat(sc.capacity, n_h)
    bounds: list[tuple[float, float | None]] = [(0.0, float(c)) for c in cap]
    bounds += [(0.0, None)] * n + [(0.0, None)] * max(n_b - 1, 0) + [(0.0, 0.0)] * min(n_b, 1)
    return LinearProgram(costs, sp.vstack(rows_ub, format="csr"), np.concatenate(rhs_ub),
                    sp.hstack(parts, format="csr"), sc.demand.astype(np.float64), bounds)


def _solve(prog: LinearProgram, c: NDArray[np.float64], extra_ub: list[tuple[NDArray[np.float64], float]]
           ) -> NDArray[np.float64]:
    a_ub, b_ub = prog.a_ub, prog.b_ub
    if extra_ub:
        a_ub = sp.vstack([a_ub, sp.csr_matrix(np.array([r for r, _ in extra_ub]))], format="csr")
        b_ub = np.concatenate([b_ub, [v for _, v in extra_ub]])
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=prog.a_eq, b_eq=prog.b_eq, bounds=prog.bounds,
                  method="highs")
    if res.status != 0:
        raise ConfigError(f"allocation LP: {res.message} (capacity or water budget too small "
                          "for the demand?)")
    return np.asarray(res.x, dtype=np.float64)


def _allocation(sc: Scenario, prog: LinearProgram, v: NDArray[np.float64], solve_s: float,
                solves: int) -> Allocation:
    n_s, n_h = sc.shape
    n = n_s * n_h
    return Allocation(v[:n].reshape(n_s, n_h), v[n : 2 * n].reshape(n_s, n_h), v[2 * n :],
                      {k: float(c @ v) for k, c in prog.costs.items()}, solve_s, solves)


def solve_lexicographic(sc: Scenario, order: Sequence[str] = ("cost", "carbon", "delay"),
                        rel_tol: float = 1e-6) -> Allocation:
    """Optimise ``order[0]``, then ``order[1]`` with the first held within ``rel_tol``, etc.

    Raises:
        ConfigError: unknown objective, bad scenario, or an infeasible LP.
    """
    _check_names(order)
    began = time.perf_counter()
    prog = _build(sc)
    v = lexicographic(prog, order, rel_tol)
    return _allocation(sc, prog, v, time.perf_counter() - began, len(order))


def lexicographic(prog: LinearProgram, order: Sequence[str], rel_tol: float = 1e-6
                  ) -> NDArray[np.float64]:
    """Minimise ``prog.costs[order[0]]``, then each next one with the earlier ones held within
    ``rel_tol`` of their optimum; returns the last solution.

    Raises:
        ConfigError: the LP is infeasible.
    """
    held: list[tuple[NDArray[np.float64], float]] = []
    v = np.zeros(0)
    for name in order:
        c = prog.costs[name]
        v = _solve(prog, c, held)
        best = float(c @ v)
        held.append((c, best + rel_tol * abs(best) + 1e-9))
    return v


def solve_weighted(sc: Scenario, weights: Mapping[str, float],
                   scales: Mapping[str, float] | None = None) -> Allocation:
    """Minimise ``sum_k weights[k] * objective_k / scales[k]``.

    Args:
        sc: the scenario.
        weights: weights over :data:`OBJECTIVES` (missing means 0).
        scales: divisor of each objective (e.g. its own optimum) so weights compare unitless
            shares; by default each objective's value at its own optimum (one LP each).

    Raises:
        ConfigError: unknown objective, bad scenario, or an infeasible LP.
    """
    _check_names(weights)
    began = time.perf_counter()
    prog = _build(sc)
    solves = 0
    if scales is None:
        scales, solves = objective_scales(sc, prog, list(weights)), len(weights)
    c = sum(w * prog.costs[k] / max(scales[k], 1e-12) for k, w in weights.items() if w > 0)
    v = _solve(prog, np.asarray(c, dtype=np.float64), [])
    return _allocation(sc, prog, v, time.perf_counter() - began, solves + 1)


def objective_scales(sc: Scenario, prog: LinearProgram | None = None,
                     names: Sequence[str] = OBJECTIVES) -> dict[str, float]:
    """Each objective's minimum on its own (at least a tiny positive number)."""
    prog = prog or _build(sc)
    return {k: max(abs(float(prog.costs[k] @ _solve(prog, prog.costs[k], []))), 1e-9)
            for k in names}


def _check_names(names: Sequence[str] | Mapping[str, float]) -> None:
    for k in names:
        if k not in OBJECTIVES:
            raise ConfigError(f"unknown objective {k!r} (known: {', '.join(OBJECTIVES)})")
