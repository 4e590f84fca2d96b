"""Run several strategies on one scenario, and measure them against a lower bound.

Strategies are the live ones (:func:`router.scoring.strategies.get_strategy`, weights from the settings);
``optimal`` is :class:`router.scoring.following.PlanStrategy` following the allocation LP solved
for the very batches of the run (:func:`router.sim.batchlp.plan_batches`, one site per device
class). Every strategy routes the same batches (:mod:`router.sim.batches`), cut once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from pipeline.grid.trace import GridConditions
from router.config import RouterConfig
from router.scoring.following import PlanStrategy
from router.scoring.strategies import Strategy, get_strategy
from router.sim.arrivals import Arrivals
from router.sim.batches import BatchTrace
from router.sim.batchlp import BatchPlan, Bound, RunCosts, lower_bound, plan_batches, run_costs
from router.sim.events import SimOutcome, batch_trace, simulate
from router.sim.fleet import Fleet
from router.sim.metrics import Series, Summary, hourly, summarise

DEFAULT_PLAN_ORDER = ("cost", "carbon", "delay")


@dataclass
class Comparison:
    """Summaries and hourly series per strategy, the batches they routed, the plan
    ``optimal`` followed."""

    trace: BatchTrace
    summaries: list[Summary] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    outcomes: list[SimOutcome] = field(default_factory=list)
    plan: BatchPlan | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SimRun:
    """What every strategy of a comparison shares."""

    fleet: Fleet
    arrivals: Arrivals
    grid: GridConditions
    config: RouterConfig
    start: datetime
    hours: int
    slo_s: float
    plan_order: tuple[str, ...] = DEFAULT_PLAN_ORDER

    def costs(self, trace: BatchTrace, max_delay_s: float = 0.0) -> RunCosts:
        """``trace``'s batches priced on the fleet, hour by hour (see :func:`run_costs`)."""
        return run_costs(self.fleet, trace, self.grid, self.start, self.hours, max_delay_s)


def plan_for(run: SimRun, trace: BatchTrace, order: Sequence[str] | None = None) -> BatchPlan:
    """The allocation LP of ``run``'s batches, ``order`` (default the run's) lexicographically,
    each batch on a class that can finish it within the run's latency target where any can."""
    return plan_batches(run.costs(trace), order or run.plan_order, run.config.slo_s,
                        run.hours)


def make_strategy(run: SimRun, name: str, comparison: Comparison) -> Strategy:
    """A fresh strategy instance; for ``optimal`` the LP is solved first."""
    if name != "optimal":
        return get_strategy(name, run.config.weights)
    plan = plan_for(run, comparison.trace)
    comparison.plan = plan
    comparison.notes.append(f"optimal follows the LP plan for lex:{','.join(plan.order)}")
    comparison.notes.extend(plan.notes)
    site_of = {d.name: s for s, cls in enumerate(run.fleet.classes) for d in cls.members}
    return PlanStrategy(plan.shares, site_of, run.start, plan.order)


def compare(run: SimRun, names: Sequence[str]) -> Comparison:
    """Simulate each strategy in ``names`` on the same run."""
    out = Comparison(batch_trace(run.arrivals, run.config, run.fleet.registry))
    for name in names:
        strategy = make_strategy(run, name, out)
        outcome = simulate(run.fleet, run.arrivals, run.grid, strategy, run.config, run.start,
                           out.trace)
        out.outcomes.append(outcome)
        out.summaries.append(summarise(outcome, run.slo_s, run.hours * 3600.0))
        out.series.append(hourly(outcome, run.hours))
    return out


@dataclass(frozen=True)
class Gap:
    """A strategy's operational carbon against the LP lower bound on the same batches."""

    strategy: str
    online_kg: float
    bound_kg: float
    bound_solve_s: float

    @property
    def gap(self) -> float:
        """Relative excess of the strategy over the bound, (online - bound) / bound."""
        return (self.online_kg - self.bound_kg) / self.bound_kg if self.bound_kg > 0 else float("nan")


def carbon_bound(run: SimRun, comparison: Comparison) -> Bound:
    """The least operational gCO2e any schedule of the comparison's batches can reach.

    A relaxation of the simulation (see :mod:`router.sim.batchlp`): same batches (sizes,
    tokens), same hours and zones, each device class's hours of capacity, every batch priced
    at the class it goes to; batches may start as much later than routed as the longest wait
    in the runs compared. No strategy of the comparison can come out below it.
    """
    delays = [float(np.max(np.subtract(o.batches.start_s, o.batches.dispatch_s)))
              for o in comparison.outcomes if o.batches.start_s]
    max_delay_s = max(delays, default=0.0)
    return lower_bound(run.costs(comparison.trace, max_delay_s), "carbon", max_delay_s)


def gaps_to(bound: Bound, summaries: Sequence[Summary]) -> list[Gap]:
    """Each strategy's operational carbon against ``bound`` (a carbon :func:`carbon_bound`)."""
    return [Gap(s.strategy, s.carbon_kg, bound.value / 1000.0, bound.solve_s) for s in summaries]


def unpriced_zones(run: SimRun) -> list[str]:
    """Zones of the fleet without price data in some hour of the run (a device with only a
    fixed intensity has no zone and no price)."""
    zones = sorted({d.zone for d in run.fleet.registry.devices if d.zone is not None})
    hours = [run.start + timedelta(hours=h) for h in range(run.hours)]
    return [z for z in zones if any(run.grid.price_usd_per_kwh(z, at) is None for at in hours)]
