"""The allocation LP on hand-solvable cases, ADMM against it, and the Pareto front."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.grid.trace import GridTrace
from router.allocation.admm import solve_admm
from router.allocation.lp import Scenario, objective_scales, solve_lexicographic, solve_weighted
from router.allocation.pareto import dominates, non_dominated, pareto_front
from router.sim.scenario import build_scenario, synthetic_sites


def two_sites(**kw: object) -> Scenario:
    """Site a: 100 g/kWh at 2 USD/kWh; site b: 200 g/kWh at 1 USD/kWh; 1 kWh per token."""
    base = dict(
        sites=["a", "b"], demand=np.array([10.0]), capacity=np.array([6.0, 6.0]),
        kwh_per_token=np.array([1.0, 1.0]), pue=np.ones((2, 1)),
        intensity_g_per_kwh=np.array([[100.0], [200.0]]),
        price_usd_per_kwh=np.array([[2.0], [1.0]]),
        water_l_per_kwh=np.array([[2.0], [0.5]]), latency_s=np.array([0.1, 0.2]))
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


def test_carbon_first_fills_the_clean_site() -> None:
    alloc = solve_lexicographic(two_sites(), ["carbon", "cost"])
    assert alloc.tokens[:, 0] == pytest.approx([6.0, 4.0], rel=1e-4)
    assert alloc.objectives["carbon"] == pytest.approx(1400.0, rel=1e-4)
    assert alloc.objectives["cost"] == pytest.approx(16.0, rel=1e-4)


def test_cost_first_then_carbon() -> None:
    alloc = solve_lexicographic(two_sites(), ["cost", "carbon", "delay"])
    assert alloc.tokens[:, 0] == pytest.approx([4.0, 6.0], rel=1e-4)
    assert alloc.objectives["cost"] == pytest.approx(14.0, rel=1e-4)
    assert alloc.solves == 3


def test_renewables_cost_no_carbon() -> None:
    alloc = solve_lexicographic(two_sites(renewable_kwh=np.array([[3.0], [0.0]])), ["carbon"])
    assert alloc.objectives["carbon"] == pytest.approx(3 * 100 + 4 * 200)
    assert alloc.grid_kwh[0, 0] == pytest.approx(3.0)


def test_water_budget_binds() -> None:
    # 2 xa + 0.5 xb <= 10 with xa + xb = 10 leaves xa <= 10/3.
    sc = two_sites(water_budget_l=10.0, capacity=np.array([6.0, 10.0]))
    alloc = solve_lexicographic(sc, ["carbon"])
    assert alloc.tokens[0, 0] == pytest.approx(10 / 3)
    assert alloc.objectives["water"] == pytest.approx(10.0)


def test_deferral_moves_load_to_the_cleaner_hour() -> None:
    sc = Scenario(sites=["a"], demand=np.array([6.0, 0.0]), capacity=np.array([6.0]),
                  kwh_per_token=np.array([1.0]), pue=np.ones((1, 2)),
                  intensity_g_per_kwh=np.array([[300.0, 100.0]]),
                  price_usd_per_kwh=np.ones((1, 2)), water_l_per_kwh=np.zeros((1, 2)),
                  latency_s=np.array([0.0]), allow_defer=True)
    alloc = solve_lexicographic(sc, ["carbon"])
    assert alloc.objectives["carbon"] == pytest.approx(600.0)
    assert alloc.deferred[0] == pytest.approx(6.0)


def test_infeasible_and_bad_input_are_clear() -> None:
    with pytest.raises(ConfigError, match="LP"):
        solve_lexicographic(two_sites(demand=np.array([20.0])), ["carbon"])
    with pytest.raises(ConfigError, match="unknown objective"):
        solve_lexicographic(two_sites(), ["speed"])
    with pytest.raises(ConfigError, match="'pue'"):
        solve_lexicographic(two_sites(pue=np.ones((3, 1))), ["carbon"])


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    sites = synthetic_sites(8, seed=3)
    cap = sum(s.count * s.tokens_per_s * 3600 for s in sites)
    demand = cap * 0.5 * (1 + 0.3 * np.sin(np.arange(6) / 6 * np.pi))
    sc, _ = build_scenario(sites, demand, GridTrace(), datetime(2024, 6, 1, tzinfo=UTC))
    return sc


@pytest.mark.parametrize("budget", [None, 0.97])
def test_admm_reaches_the_central_optimum(scenario: Scenario, budget: float | None) -> None:
    weights = {"carbon": 1.0, "cost": 1.0, "delay": 0.2}
    sc = scenario
    if budget is not None:
        sc = replace(sc, water_budget_l=budget * solve_weighted(sc, weights).objectives["water"])
    central = solve_weighted(sc, weights)
    scales = objective_scales(sc, names=list(weights))
    best = sum(w * central.objectives[k] / scales[k] for k, w in weights.items())
    res = solve_admm(sc, weights)
    assert abs(res.objective - best) / best < 0.01
    assert res.primal_residual < 1e-3 and res.dual_residual < 1e-3
    assert res.history and all(r >= 0 and s >= 0 for r, s in res.history)
    assert res.tokens.sum(axis=0) == pytest.approx(sc.demand, rel=5e-3)


def test_pareto_front_is_non_dominated(scenario: Scenario) -> None:
    front = pareto_front(scenario, lattice_steps=2, n_random=4, seed=1)
    values = front.matrix()
    assert len(front.points) >= 2
    for i in range(len(values)):
        for j in range(len(values)):
            assert i == j or not dominates(values[j], values[i])


def test_non_dominated_filter() -> None:
    values = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    assert non_dominated(values) == [0, 1]


def test_plan_strategy_follows_the_hourly_shares() -> None:
    from pipeline.fleet.devices import Device, Registry
    from router.predict.nominal import NominalPredictor
    from router.predict.predictor import BatchShape
    from router.scoring.decide import decide
    from router.scoring.following import PlanStrategy
    from router.scoring.options import grid_now, options_for

    start = datetime(2024, 6, 1, tzinfo=UTC)
    reg = Registry(devices=[Device(name="a", kind="cpu", zone="DE-LU"),
                            Device(name="b", kind="cpu", zone="GB")])
    strategy = PlanStrategy(np.array([[0.75], [0.25]]), {"a": 0, "b": 1}, start)
    strategy.advance_to(start)
    zones = grid_now(GridTrace(), reg.devices, start)
    chosen = []
    for _ in range(8):
        opts = options_for(reg, BatchShape(1, 10, 10), NominalPredictor(), zones, {})
        chosen.append(decide(strategy, opts).option.device.name)
    assert chosen.count("a") == 6 and chosen.count("b") == 2


def test_plan_strategy_falls_back_by_the_plans_objective_not_by_fewest_batches() -> None:
    # The plan puts the hour on a slow site that cannot meet the SLO; the batch must then go to
    # the cheapest (cost-first plan) or cleanest (carbon-first) of the others, whatever they
    # were sent so far.
    from pipeline.fleet.devices import Device, Registry
    from router.predict.nominal import NominalPredictor
    from router.predict.predictor import BatchShape
    from router.scoring.decide import decide
    from router.scoring.following import PlanStrategy, plan_order
    from router.scoring.options import grid_now, options_for

    start = datetime(2024, 6, 1, 12, tzinfo=UTC)
    reg = Registry(devices=[
        Device(name="slow", kind="jetson", zone="DE-LU", nominal_tokens_per_s=1.0),
        Device(name="ca", kind="nvidia", zone="US-CAL-CISO", nominal_tokens_per_s=500.0),
        Device(name="au", kind="nvidia", zone="AU-NSW", nominal_tokens_per_s=500.0),
        Device(name="gb", kind="nvidia", zone="GB", nominal_tokens_per_s=500.0)])
    zones = grid_now(GridTrace(), reg.devices, start)
    shares = np.array([[1.0], [0.0], [0.0], [0.0]])
    for objective, expected in (("lex:cost,carbon,delay", "ca"), ("lex:carbon,cost", "gb")):
        strategy = PlanStrategy(shares, {"slow": 0, "ca": 1, "au": 2, "gb": 3}, start,
                                plan_order(objective))
        strategy.advance_to(start)
        chosen = [decide(strategy, options_for(reg, BatchShape(1, 10, 100), NominalPredictor(),
                                               zones, {}), slo_s=10.0).option.device.name
                  for _ in range(3)]
        assert chosen == [expected] * 3, objective
    assert plan_order("weighted:carbon=1,cost=3") == ("cost", "carbon")
