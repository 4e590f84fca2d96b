"""Allocation LPs over the exact batches of a simulated run: a lower bound, and a plan.

Both start from the batches every strategy routes (:mod:`router.sim.batches`) and what each
would cost on each device class (:mod:`router.sim.batchcost`), so they price the same batch
sizes, tokens, hours, zones and devices as the simulation, not a mean request at the cut size.

:func:`lower_bound` is a relaxation of every schedule the simulator can produce, so no
strategy can come out below it:

- each batch no class can take (size, memory) is left out, as every strategy misses it;
- a batch's prompt and new tokens may be split freely over the classes that may take it (a
  strategy sends each batch whole to one device);
- a class serves, in each hour, at most ``devices x (3600 s + its longest batch)`` of work
  started in that hour (a batch starting at 59:59 is accounted in full to its start hour);
- a batch starts in the hour it was routed in, or in a later one if the runs compared started
  some batch that much later (``max_delay_s``, the longest queue a strategy built): the bound
  holds for every schedule whose queues are no longer than that.

:func:`plan_batches` is what ``optimal`` follows: the fluid assignment of each hour's batches
(grouped by size and by the classes that can serve them within the latency target) to device
classes under each class's hour of capacity, optimising the objectives lexicographically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from pipeline.accounting.account import JOULES_PER_KWH
from pipeline.errors import ConfigError
from pipeline.grid.trace import GridConditions
from router.allocation.lp import OBJECTIVES, LinearProgram, lexicographic
from router.sim.batchcost import (
    SECONDS_PER_HOUR,
    BatchCosts,
    ClassRates,
    HourFactors,
    batch_costs,
    class_rates,
    hour_factors,
)
from router.sim.batches import BatchTrace
from router.sim.fleet import Fleet

OVERTIME = "overtime"


@dataclass(frozen=True)
class RunCosts:
    """A run's batches with their costs on every class, and the classes' hourly factors.

    Attributes:
        trace: the batches.
        rates: per-token seconds and joules of each class and batch size.
        costs: every batch on every class.
        factors: per-kWh carbon, cost and water of each class for every hour a batch of the
            run may start in (from the run's start).
        devices: devices per class.
    """

    trace: BatchTrace
    rates: ClassRates
    costs: BatchCosts
    factors: HourFactors
    devices: NDArray[np.float64]


def run_costs(fleet: Fleet, trace: BatchTrace, grid: GridConditions, start: datetime,
              hours: int, max_delay_s: float = 0.0) -> RunCosts:
    """Price ``trace`` on ``fleet`` for ``hours`` hours from ``start``, and further for
    batches routed late or starting up to ``max_delay_s`` after routing."""
    max_size = int(trace.size.max()) if len(trace) else 1
    rates = class_rates(fleet, max_size)
    last_s = float(trace.dispatch_s.max()) if len(trace) else 0.0
    hours = max(hours, int((last_s + max_delay_s) // SECONDS_PER_HOUR) + 1)
    return RunCosts(trace, rates, batch_costs(fleet, trace, rates),
                    hour_factors(fleet, grid, start, hours),
                    np.array([len(c.members) for c in fleet.classes], dtype=np.float64))


@dataclass(frozen=True)
class Bound:
    """The lower bound of one objective over a run's batches.

    Attributes:
        objective: ``carbon`` (gCO2e, operational), ``cost`` (USD) or ``water`` (L).
        value: the bound, in the objective's unit.
        max_delay_s: longest wait from routing to start it allows.
        batches: batches it covers (those some class can take).
        solve_s: wall seconds of the LP.
    """

    objective: str
    value: float
    max_delay_s: float
    batches: int
    solve_s: float


def lower_bound(rc: RunCosts, objective: str = "carbon", max_delay_s: float = 0.0) -> Bound:
    """The least ``objective`` any schedule of ``rc``'s batches can reach (see the module).

    Raises:
        ConfigError: an unknown objective, ``cost`` where some zone has no price, or a
            delay beyond the hours ``rc`` was priced for.
    """
    began = time.perf_counter()
    factor = _factor(rc.factors, objective)
    t, fits = rc.trace, rc.costs.fits
    keep = rc.costs.servable
    first_h = (t.dispatch_s // SECONDS_PER_HOUR).astype(np.int64)
    span = ((t.dispatch_s + max_delay_s) // SECONDS_PER_HOUR).astype(np.int64) - first_h
    if len(t) and int((first_h + span).max()) >= factor.shape[1]:
        raise ConfigError(f"lower bound: a delay of {max_delay_s:.0f} s reaches past the hours "
                          "the run was priced for")
    keys, inverse = _group(np.column_stack([first_h, span, t.size, fits])[keep])
    tokens = np.stack([np.bincount(inverse, weights=t.prompt_tokens[keep],
                                   minlength=len(keys)),
                       np.bincount(inverse, weights=t.new_tokens[keep], minlength=len(keys))],
                      axis=1).astype(np.float64)
    longest = np.where(fits[keep], rc.costs.seconds[keep], 0.0).max(axis=0, initial=0.0)
    prog = _bound_program(rc, keys, tokens, (objective, factor), longest)
    v = lexicographic(prog, [objective])
    return Bound(objective, float(prog.costs[objective] @ v), max_delay_s, int(keep.sum()),
                 time.perf_counter() - began)


def _factor(factors: HourFactors, objective: str) -> NDArray[np.float64]:
    if objective not in ("carbon", "cost", "water"):
        raise ConfigError(f"lower bound: objective must be carbon, cost or water, not "
                          f"{objective!r}")
    table: NDArray[np.float64] = getattr(factors, f"{objective}_{_UNIT[objective]}")
    if np.isnan(table).any():
        raise ConfigError("lower bound on cost: some zone of the fleet has no price data")
    return table


_UNIT = {"carbon": "g", "cost": "usd", "water": "l"}


def _group(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Distinct rows of ``keys`` and the group index of each row."""
    if not len(keys):
        return keys.reshape(0, keys.shape[1]), np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(keys.astype(np.int64), axis=0, return_inverse=True)
    return unique, inverse.ravel()


@dataclass
class _Columns:
    """Variables of an LP under construction, one entry per column."""

    group: list[int] = field(default_factory=list)
    cls: list[int] = field(default_factory=list)
    hour: list[int] = field(default_factory=list)
    part: list[int] = field(default_factory=list)  # 0 prompt tokens, 1 new tokens, or batches

    def add(self, group: int, cls: int, hour: int, part: int) -> None:
        """Append one variable."""
        self.group.append(group)
        self.cls.append(cls)
        self.hour.append(hour)
        self.part.append(part)

    def arrays(self) -> tuple[NDArray[np.int64], ...]:
        """The four index arrays."""
        return tuple(np.asarray(x, dtype=np.int64) for x in (self.group, self.cls, self.hour,
                                                                self.part))


def _bound_program(rc: RunCosts, keys: NDArray[np.int64], tokens: NDArray[np.float64],
                   objective: tuple[str, NDArray[np.float64]], longest: NDArray[np.float64]
                   ) -> LinearProgram:
    """Variables: tokens of each group's part (prompt, new) on each class, starting in each
    hour the group may start in."""
    cols = _Columns()
    for g, key in enumerate(keys):
        first_h, span, classes = int(key[0]), int(key[1]), np.flatnonzero(key[3:])
        for c in classes:
            for h in range(first_h, first_h + span + 1):
                cols.add(g, int(c), h, 0)
                cols.add(g, int(c), h, 1)
    g_i, c_i, h_i, m_i = cols.arrays()
    size = keys[g_i, 2] if len(g_i) else g_i
    seconds = rc.rates.seconds[c_i, size, m_i]
    kwh = rc.rates.joules[c_i, size, m_i] / JOULES_PER_KWH
    name, factor = objective
    n_hours = factor.shape[1]
    a_eq = _indicator(g_i * 2 + m_i, 2 * len(keys))
    cap_row = c_i * n_hours + h_i
    a_ub = _indicator(cap_row, len(rc.devices) * n_hours, seconds)
    b_ub = np.repeat(rc.devices * (SECONDS_PER_HOUR + longest), n_hours)
    return LinearProgram({name: kwh * factor[c_i, h_i]}, a_ub, b_ub, a_eq, tokens.ravel(),
                         [(0.0, None)] * len(g_i))


def _indicator(rows: NDArray[np.int64], n_rows: int,
               values: NDArray[np.float64] | None = None) -> sp.csr_matrix:
    """A sparse (n_rows, len(rows)) matrix with ``values`` (default 1) at (rows[j], j)."""
    data = np.ones(len(rows)) if values is None else values
    return sp.csr_matrix((data, (rows, np.arange(len(rows)))), shape=(n_rows, len(rows)))


@dataclass(frozen=True)
class BatchPlan:
    """The plan ``optimal`` follows.

    Attributes:
        shares: share of each hour's batches per class, shape (C, hours); columns sum to 1
            where the hour has batches.
        objectives: the plan's predicted cost (USD, priced zones), carbon (g), delay
            (request-seconds of service) and water (L).
        order: the objectives, in the order they were optimised.
        notes: what the plan assumed (zones without prices, overtime).
        solve_s: wall seconds of the LPs.
    """

    shares: NDArray[np.float64]
    objectives: dict[str, float]
    order: tuple[str, ...]
    notes: list[str]
    solve_s: float


def plan_batches(rc: RunCosts, order: Sequence[str], slo_s: float | None,
                 hours: int) -> BatchPlan:
    """Assign each hour's batches to classes (fluid), ``order`` lexicographically.

    A batch may go to a class that can take it and, with ``slo_s``, finish it on an idle
    device within the target (counting its wait to be batched) where any class can; work
    beyond a class's hour of capacity is overtime, minimised before everything else.

    Raises:
        ConfigError: an unknown objective.
    """
    for name in order:
        if name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    began = time.perf_counter()
    t, costs = rc.trace, rc.costs
    use = _plan_classes(costs, t.waited_s, slo_s)
    keep = costs.servable
    first_h = np.minimum(t.dispatch_s // SECONDS_PER_HOUR, hours - 1).astype(np.int64)
    keys, inverse = _group(np.column_stack([first_h, t.size, use])[keep])
    n = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
    per = {k: np.stack([np.bincount(inverse, weights=v[keep][:, c], minlength=len(keys))
                        for c in range(len(rc.devices))], axis=1) / n[:, None]
           for k, v in (("seconds", costs.seconds), ("joules", costs.joules))}
    prog, notes = _plan_program(rc, keys, n, per, hours)
    v = lexicographic(prog, [OVERTIME, *order])
    overtime = float(prog.costs[OVERTIME] @ v)
    if overtime > 1e-6:
        notes.append(f"the plan needs {overtime:,.0f} device-seconds beyond the fleet's hourly "
                     "capacity")
    shares = _shares(keys, v, len(rc.devices), hours)
    return BatchPlan(shares, {k: float(c @ v) for k, c in prog.costs.items() if k != OVERTIME},
                     tuple(order), notes, time.perf_counter() - began)


def _plan_classes(costs: BatchCosts, waited_s: NDArray[np.float64],
                  slo_s: float | None) -> NDArray[np.bool_]:
    if slo_s is None:
        return costs.fits
    budget_s = np.asarray(slo_s - waited_s, dtype=np.float64)
    meets = costs.fits & (costs.seconds <= budget_s[:, None])
    any_meets = np.asarray(meets.any(axis=1), dtype=bool)
    return np.where(any_meets[:, None], meets, costs.fits)


def _plan_program(rc: RunCosts, keys: NDArray[np.int64], n: NDArray[np.float64],
                  per: dict[str, NDArray[np.float64]], hours: int
                  ) -> tuple[LinearProgram, list[str]]:
    """Variables: batches of each group on each class it may use, then overtime per class
    and hour."""
    g_i, c_i = np.nonzero(keys[:, 2:])
    h_i = keys[g_i, 0]
    n_c = len(rc.devices)
    n_x, n_o = len(g_i), n_c * hours
    seconds = per["seconds"][g_i, c_i]
    kwh = per["joules"][g_i, c_i] / JOULES_PER_KWH
    f = rc.factors
    price, notes = _priced(f.cost_usd[:, :hours])
    pad = np.zeros(n_o)
    costs = {
        OVERTIME: np.concatenate([np.zeros(n_x), np.ones(n_o)]),
        "cost": np.concatenate([kwh * price[c_i, h_i], pad]),
        "carbon": np.concatenate([kwh * f.carbon_g[c_i, h_i], pad]),
        "delay": np.concatenate([seconds * keys[g_i, 1], pad]),
        "water": np.concatenate([kwh * f.water_l[c_i, h_i], pad]),
    }
    a_ub = sp.hstack([_indicator(c_i * hours + h_i, n_o, seconds), -sp.identity(n_o)],
                     format="csr")
    b_ub = np.repeat(rc.devices * SECONDS_PER_HOUR, hours)
    a_eq = sp.hstack([_indicator(g_i, len(keys)), sp.csr_matrix((len(keys), n_o))], format="csr")
    return LinearProgram(costs, a_ub, b_ub, a_eq, n, [(0.0, None)] * (n_x + n_o)), notes


def _priced(price: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[str]]:
    """Prices with the hours of zones without data at the dearest known price, so that
    missing data never looks cheap; a note says so."""
    missing = np.isnan(price)
    if not missing.any():
        return price, []
    if missing.all():
        return np.zeros_like(price), ["no zone of the fleet has price data: the plan's cost "
                                      "objective is void"]
    dearest = float(np.nanmax(price))
    return np.where(missing, dearest, price), [
        f"the plan priced hours without price data at the dearest known, "
        f"{dearest:.4f} USD/kWh"]


def _shares(keys: NDArray[np.int64], v: NDArray[np.float64], n_c: int,
            hours: int) -> NDArray[np.float64]:
    g_i, c_i = np.nonzero(keys[:, 2:])
    per_class_hour = np.zeros((n_c, hours))
    np.add.at(per_class_hour, (c_i, keys[g_i, 0]), v[: len(g_i)])
    total = per_class_hour.sum(axis=0, keepdims=True)
    return np.divide(per_class_hour, total, out=np.zeros_like(per_class_hour), where=total > 0)
