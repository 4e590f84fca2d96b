"""Distributed solve of the weighted allocation LP by ADMM across sites.

The problem is :func:`router.allocation.lp.solve_weighted` without deferral: each site ``s`` owns its
load ``x[s,:]`` (within its capacity) and its grid energy, and pays for them; the sites are
coupled only by the hourly demand (``sum_s x[s,h] = demand[h]``) and the shared water budget.
In consensus form (Boyd et al., "Distributed Optimization and Statistical Learning via ADMM",
2011, section 7) with ``x`` the sites' copies and ``z`` the coordinator's:

- each site solves ``min f_s(x_s) + rho/2 |x_s - z_s + u_s|^2`` on its own data; with grid energy
  eliminated, ``f_s`` is convex piecewise linear per hour (a kink where renewables run out), so
  the update is closed form per hour;
- the coordinator projects ``x + u`` onto the coupling set (demand met, water within budget);
- ``u += x - z``.

Primal residual ``|x - z|`` and dual residual ``rho |z - z_prev|`` are recorded each iteration;
``rho`` is rebalanced when one residual dominates the other (Boyd, section 3.4.1).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError
from router.allocation.lp import Scenario, objective_scales


@dataclass(frozen=True)
class AdmmResult:
    """What the ADMM solve reached.

    Attributes:
        tokens: the sites' allocation ``x`` (within capacity), shape (S, H).
        objective: the scaled weighted objective at ``tokens``.
        iterations: iterations run.
        primal_residual: final ``|x - z|`` (relative to the demand's norm).
        dual_residual: final ``rho |z - z_prev|`` (same scale).
        history: (primal, dual) residual every ``record_every`` iterations.
        converged: both residuals met the tolerance.
        solve_s: wall seconds.
    """

    tokens: NDArray[np.float64]
    objective: float
    iterations: int
    primal_residual: float
    dual_residual: float
    history: list[tuple[float, float]]
    converged: bool
    solve_s: float


@dataclass(frozen=True)
class _Local:
    """Per (site, hour) data of the sites' subproblems, in scaled units."""

    lin: NDArray[np.float64]  # cost per unit of load before renewables run out
    steep: NDArray[np.float64]  # cost per unit after
    kink: NDArray[np.float64]  # load at which renewables run out (clipped to capacity)
    cap: NDArray[np.float64]

    def cost(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """The sites' objective per element at load ``x``."""
        return self.lin * np.minimum(x, self.kink) + self.steep * np.maximum(x - self.kink, 0.0)

    def prox(self, v: NDArray[np.float64], rho: float) -> NDArray[np.float64]:
        """argmin over [0, cap] of ``cost(x) + rho/2 (x - v)^2``, elementwise."""
        low = np.clip(v - self.lin / rho, 0.0, self.kink)
        high = np.clip(v - self.steep / rho, self.kink, self.cap)
        f_low = self.cost(low) + 0.5 * rho * (low - v) ** 2
        f_high = self.cost(high) + 0.5 * rho * (high - v) ** 2
        return np.where(f_low <= f_high, low, high)


def _local(sc: Scenario, weights: Mapping[str, float], scales: Mapping[str, float],
           unit: float) -> _Local:
    def w(k: str) -> float:
        return weights.get(k, 0.0) / max(scales.get(k, 1.0), 1e-12)

    n_h = sc.shape[1]
    kwh = sc.kwh_per_token[:, None] * sc.pue  # facility kWh per token
    per_grid_kwh = w("cost") * sc.price_usd_per_kwh + w("carbon") * sc.intensity_g_per_kwh
    lin = (w("delay") * sc.latency_s[:, None] * np.ones((1, n_h))
           + w("water") * sc.kwh_per_token[:, None] * sc.water_l_per_kwh)
    renew = np.where(per_grid_kwh >= 0, sc.renewables(), 0.0)  # a negative price buys it all
    cap = np.repeat(sc.capacity[:, None], n_h, axis=1) / unit
    kink = np.minimum(np.divide(renew, kwh, out=np.full_like(kwh, np.inf), where=kwh > 0) / unit,
                      cap)
    return _Local(lin * unit, (lin + per_grid_kwh * kwh) * unit, kink, cap)


def _project(v: NDArray[np.float64], demand: NDArray[np.float64], water: NDArray[np.float64],
             budget: float | None) -> NDArray[np.float64]:
    """Euclidean projection of ``v`` onto {column sums = demand, sum(water * z) <= budget}."""
    n_s = v.shape[0]
    z = v - (v.sum(axis=0) - demand) / n_s
    if budget is None or float((water * z).sum()) <= budget:
        return z
    # On the budget's boundary: z = v - 1 lambda^T - mu water, with lambda fixed by the demand
    # rows and mu by the water equality (closed form in mu).
    wc = water.sum(axis=0)
    base = v - (v.sum(axis=0) - demand) / n_s
    direction = water - wc / n_s
    mu = (float((water * base).sum()) - budget) / max(float((water * direction).sum()), 1e-30)
    return base - mu * direction


def solve_admm(sc: Scenario, weights: Mapping[str, float], *, rho: float = 1.0,
               tol: float = 1e-6, max_iter: int = 50_000, record_every: int = 50) -> AdmmResult:
    """Solve the weighted allocation by ADMM across sites.

    Args:
        sc: the scenario (``allow_defer`` must be False).
        weights: weights over cost, carbon, delay, water; each objective is scaled by its own
            optimum, exactly as :func:`router.allocation.lp.solve_weighted` does by default.
        rho: initial penalty (in scaled units).
        tol: relative tolerance on both residuals.
        max_iter: iteration cap.
        record_every: residual history stride.

    Raises:
        ConfigError: a scenario with deferral, or an LP solve for the scales failing.
    """
    if sc.allow_defer:
        raise ConfigError("ADMM solves the allocation without deferral (allow_defer=False)")
    began = time.perf_counter()
    scales = objective_scales(sc, names=[k for k, w in weights.items() if w > 0])
    n_s, _ = sc.shape
    unit = max(float(sc.demand.mean()) / n_s, 1e-12)
    loc = _local(sc, weights, scales, unit)
    demand = sc.demand / unit
    water = sc.kwh_per_token[:, None] * sc.water_l_per_kwh * unit
    z = _project(np.zeros_like(loc.cap), demand, water, sc.water_budget_l)
    x, u = z.copy(), np.zeros_like(z)
    norm = max(float(np.linalg.norm(demand)), 1e-12)
    history: list[tuple[float, float]] = []
    r = s = np.inf
    k = 0
    for k in range(1, max_iter + 1):
        x = loc.prox(z - u, rho)
        z_prev = z
        z = _project(x + u, demand, water, sc.water_budget_l)
        u = u + x - z
        r = float(np.linalg.norm(x - z)) / norm
        s = rho * float(np.linalg.norm(z - z_prev)) / norm
        if k % record_every == 0:
            history.append((r, s))
        if r < tol and s < tol:
            break
        if r > 10 * s:
            rho, u = rho * 2, u / 2
        elif s > 10 * r:
            rho, u = rho / 2, u * 2
    return AdmmResult(x * unit, float(loc.cost(x).sum()), k, r, s, history,
                      r < tol and s < tol, time.perf_counter() - began)
