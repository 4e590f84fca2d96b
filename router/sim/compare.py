"""Run several strategies on one scenario, and measure the online strategies against the LP.

Strategies are the live ones (:func:`router.strategies.get_strategy`, weights from the settings);
``optimal`` is :class:`router.plan_strategy.PlanStrategy` following the allocation LP solved for
the same fleet, arrivals and hours (one site per device class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.grid import GridConditions
from pipeline.settings import Settings
from router.batching import effective_batch_size
from router.optimal import Allocation, solve_lexicographic
from router.plan_strategy import PlanStrategy
from router.sim.arrivals import Arrivals
from router.sim.events import SimOutcome, simulate
from router.sim.fleet import Fleet
from router.sim.metrics import Series, Summary, hourly, summarise
from router.sim.scenario import build_scenario, fleet_sites, hourly_tokens
from router.strategies import Strategy, get_strategy

DEFAULT_PLAN_ORDER = ("cost", "carbon", "delay")


@dataclass
class Comparison:
    """Summaries and hourly series per strategy, and the plan ``optimal`` followed."""

    summaries: list[Summary] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    outcomes: list[SimOutcome] = field(default_factory=list)
    plan: Allocation | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SimRun:
    """What every strategy of a comparison shares."""

    fleet: Fleet
    arrivals: Arrivals
    grid: GridConditions
    settings: Settings
    start: datetime
    hours: int
    slo_s: float
    plan_order: tuple[str, ...] = DEFAULT_PLAN_ORDER


def plan_for(run: SimRun, order: Sequence[str] | None = None,
             batch_size: int | None = None) -> tuple[Allocation, list[str]]:
    """The allocation LP of ``run``'s fleet and hourly token demand (no deferral), per-token
    figures taken at ``batch_size`` (default: the size the router cuts at)."""
    batch_size = batch_size or effective_batch_size(run.settings, run.fleet.registry)
    sites = fleet_sites(run.fleet, run.arrivals, batch_size)
    sc, notes = build_scenario(sites, hourly_tokens(run.arrivals, run.hours), run.grid, run.start)
    return solve_lexicographic(sc, order or run.plan_order), notes


def make_strategy(run: SimRun, name: str, comparison: Comparison) -> Strategy:
    """A fresh strategy instance; for ``optimal`` the LP is solved first."""
    if name != "optimal":
        return get_strategy(name, run.settings.weights)
    plan, notes = plan_for(run)
    comparison.plan = plan
    comparison.notes.extend(notes)
    site_of = {d.name: s for s, cls in enumerate(run.fleet.classes) for d in cls.members}
    return PlanStrategy(plan.site_shares(), site_of, run.start)


def compare(run: SimRun, names: Sequence[str]) -> Comparison:
    """Simulate each strategy in ``names`` on the same run."""
    out = Comparison()
    for name in names:
        strategy = make_strategy(run, name, out)
        outcome = simulate(run.fleet, run.arrivals, run.grid, strategy, run.settings, run.start)
        out.outcomes.append(outcome)
        out.summaries.append(summarise(outcome, run.slo_s, run.hours * 3600.0))
        out.series.append(hourly(outcome, run.hours))
    return out


@dataclass(frozen=True)
class Gap:
    """The online strategy's operational carbon against the LP's minimum on the same load."""

    strategy: str
    online_kg: float
    lp_kg: float
    lp_solve_s: float

    @property
    def gap(self) -> float:
        """Relative excess of the online strategy, (online - LP) / LP."""
        return (self.online_kg - self.lp_kg) / self.lp_kg if self.lp_kg > 0 else float("nan")


def carbon_gap(run: SimRun, summary: Summary) -> Gap:
    """Gap of a simulated strategy's operational carbon to the carbon-minimal LP allocation.

    The LP is a fluid bound: it knows every hour's load in advance, splits load freely and
    carries no queueing; it prices every site at the mean batch size the simulated run realised
    (the online strategy cannot do better than the batches the arrivals allow). The gap is
    therefore an upper estimate of what better online decisions could still save.
    """
    mean_batch = max(1, round(summary.served / max(summary.batches, 1)))
    plan, _ = plan_for(run, order=("carbon",), batch_size=mean_batch)
    return Gap(summary.strategy, summary.carbon_kg, plan.objectives["carbon"] / 1000.0,
               plan.solve_s)
