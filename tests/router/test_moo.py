"""NSGA-II over allocation and model choice, against the LP sweep on the same instances."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.app.cli.main import main
from pipeline.grid.trace import GridTrace
from router.allocation.lp import Scenario, solve_weighted
from router.allocation.moo.compare import compare_fronts, lp_scenario, sweep_front
from router.allocation.moo.instance import (
    decode,
    encode,
    evaluate,
    instance_from_scenario,
    linear_instance,
)
from router.allocation.moo.nsga import nsga2_front
from router.sim.scenario import build_scenario, synthetic_sites

START = datetime(2024, 6, 1, tzinfo=UTC)


def _scenario(n_sites: int = 4, hours: int = 6, load: float = 0.4) -> Scenario:
    specs = synthetic_sites(n_sites, 3)
    capacity = sum(s.count * s.tokens_per_s * 3600.0 for s in specs)
    sc, _ = build_scenario(specs, np.full(hours, capacity * load), GridTrace(), START)
    return sc


def test_decoded_allocations_meet_demand_and_report_overload() -> None:
    inst = instance_from_scenario(_scenario())
    genes = np.random.default_rng(0).random((50, inst.n_var))
    tokens = decode(inst, genes)
    assert np.allclose(tokens.sum(axis=1), inst.scenario.demand[None, :])
    _, g = evaluate(inst, tokens)
    assert np.all(g <= 1e-9)  # 40% load always fits when the caps are lifted
    overloaded = _scenario(load=1.5)
    _, g = evaluate(instance_from_scenario(overloaded),
                    decode(instance_from_scenario(overloaded), genes))
    assert np.all(g.max(axis=1) > 0)


def test_linear_instance_evaluates_as_the_lp_does() -> None:
    sc = _scenario()
    alloc = solve_weighted(sc, {"carbon": 1.0})
    f, g = evaluate(linear_instance(sc), alloc.tokens[None])
    assert np.all(g <= 1e-6)
    assert f[0, 2] == pytest.approx(alloc.objectives["carbon"], rel=1e-6)
    assert f[0, 4] == pytest.approx(alloc.objectives["cost"], rel=1e-6)
    assert f[0, 3] == pytest.approx(alloc.objectives["water"], rel=1e-6)
    assert f[0, 1] * sc.demand.sum() == pytest.approx(alloc.objectives["delay"], rel=1e-6)


def test_lp_view_of_models_splits_each_site() -> None:
    inst = instance_from_scenario(_scenario())
    lp = lp_scenario(inst)
    assert len(lp.sites) == len(inst.pairs) == int(inst.offers.sum())
    for s in range(inst.scenario.shape[0]):
        mine = [k for k, (site, _) in enumerate(inst.pairs) if site == s]
        base = next(k for k in mine if inst.pairs[k][1] == 0)
        assert lp.capacity[base] == pytest.approx(inst.scenario.capacity[s] / len(mine))


def test_nsga2_beats_the_sweep_on_a_non_convex_instance() -> None:
    # Waking a site costs its idle power for the hour and TTFT grows with utilisation: the
    # front is not convex, and the weighted-sum LP can only find its supported points.
    inst = instance_from_scenario(_scenario())
    nsga = nsga2_front(inst, pop_size=60, generations=100, seed=0)
    again = nsga2_front(inst, pop_size=60, generations=100, seed=0)
    assert np.array_equal(nsga.objectives, again.objectives)  # deterministic for a seed
    sweep = sweep_front(inst, seed=0)
    c = compare_fronts(nsga, sweep)
    assert c.hv_nsga2 > c.hv_sweep
    assert c.nsga2_only > 0  # points the sweep cannot find
    quality = -nsga.objectives[:, 0]
    assert quality.max() > quality.min()  # the front trades quality against the rest
    # Seeded with the sweep's solutions, NSGA-II keeps every one of them or better.
    seeded = compare_fronts(nsga2_front(inst, pop_size=60, generations=30, seed=0,
                                        seeds=sweep.tokens), sweep)
    assert seeded.sweep_only == 0 and seeded.hv_nsga2 >= seeded.hv_sweep


def test_encoded_allocations_decode_to_themselves() -> None:
    inst = instance_from_scenario(_scenario())
    sweep = sweep_front(inst, seed=0)
    assert np.allclose(decode(inst, encode(inst, sweep.tokens)), sweep.tokens, rtol=1e-9)


def test_optimise_pareto_nsga2_prints_the_comparison() -> None:
    result = CliRunner().invoke(main, ["optimise", "--sites", "4", "--hours", "4", "--pareto",
                                       "--method", "nsga2"])
    assert result.exit_code == 0, result.output
    assert "NSGA-II front" in result.output and "hypervolume" in result.output
