"""The simulator's LPs against its strategies: the lower bound is one, ``optimal`` follows an
optimum, SLOs count the wait to be batched, cost without prices says so.

Issue 11: the LP that ``--gap`` compared with priced every site at the run's mean batch size
(rounded: 3.47 became 3) and a mean request, so ``carbon`` came out 9.5% below the "minimum";
``optimal`` followed a plan priced at the cut size that sent DE-LU's midday load to Orin boxes
that cannot finish a batch within the SLO, and fell back to the site with the fewest batches,
so it lost to ``greedy`` on cost and carbon (0.32 kg and USD 0.044 against 0.16 kg and USD
0.020 over 3 h of Poisson arrivals at 0.5/s from 10:00 UTC on the 100-device fleet).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.accounting.account import BatchAccount
from pipeline.app.cli.main import main
from pipeline.grid.trace import GridTrace
from pipeline.settings import Settings
from router.config import RouterConfig
from router.sim.arrivals import Arrivals, diurnal, poisson, read_trace, replay
from router.sim.compare import SimRun, carbon_bound, compare
from router.sim.events import SimOutcome
from router.sim.fleet import Fleet, load_fleet

FLEET = Path(__file__).parents[2] / "examples" / "fleet.toml"
STRATEGIES = ("greedy", "round_robin", "carbon", "latency", "weighted", "optimal")
SLO_S = 30.0


def small_fleet(tmp_path: Path, *, without_zone: str | None = None) -> Fleet:
    """``examples/fleet.toml`` with a fifth of each table's devices (at least one)."""
    text = re.sub(r"(?m)^count = (\d+)$", lambda m: f"count = {max(1, int(m[1]) // 5)}",
                  FLEET.read_text(encoding="utf-8"))
    if without_zone is not None:
        text = "[[device]]".join(t for t in text.split("[[device]]")
                                 if f'zone = "{without_zone}"' not in t)
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return load_fleet(path)


def packaged(hours: int, rate_scale: float) -> Arrivals:
    return replay(read_trace(), hours, rate_scale)


ARRIVALS = {
    "poisson-0.3/s-midday": (lambda: poisson(0.3, 3, seed=1), 10),
    "poisson-1/s-night": (lambda: poisson(1.0, 2, seed=2), 0),
    "poisson-3/s-evening": (lambda: poisson(3.0, 1, seed=3), 17),
    "diurnal-0.5/s": (lambda: diurnal(0.5, 3, seed=4, start_hour_utc=9.0), 9),
    "azure-trace-x0.1": (lambda: packaged(2, 0.1), 11),
}


def run_for(fleet: Fleet, pattern: str, order: tuple[str, ...]) -> SimRun:
    make, hour = ARRIVALS[pattern]
    arrivals = make()
    hours = int(np.ceil(arrivals.t_s[-1] / 3600.0))
    return SimRun(fleet, arrivals, GridTrace(), RouterConfig.from_settings(Settings(slo_s=SLO_S)), datetime(
        2024, 6, 1, hour, tzinfo=UTC), hours, SLO_S, order)


@pytest.mark.slow  # six strategies and an LP per pattern: 2 to 4 s each
@pytest.mark.parametrize("pattern", list(ARRIVALS))
def test_no_strategy_beats_the_lower_bound(tmp_path: Path, pattern: str) -> None:
    run = run_for(small_fleet(tmp_path), pattern, ("carbon", "cost", "delay"))
    result = compare(run, STRATEGIES)
    bound = carbon_bound(run, result)
    assert bound.value > 0 and bound.batches == len(result.trace)
    for s in result.summaries:
        # The LP solver's tolerance is 1e-7 relative; a strategy may meet the bound.
        assert s.carbon_kg * 1000 >= bound.value * (1 - 1e-6), s.strategy
    # Following the carbon-first plan comes close to the bound (it is nearly tight).
    optimal = result.summaries[-1]
    assert optimal.carbon_kg * 1000 <= bound.value * 1.5


OBJECTIVE_METRIC = {"carbon": ("carbon_kg", "carbon_g", 1000.0), "cost": ("cost_usd",
                                                                           "cost_usd", 1.0)}


def at_routing_hour(run: SimRun, outcome: SimOutcome, objective: str) -> float:
    """The objective with each batch accounted at the hour it was routed in, as the plan
    (and a strategy) sees it, rather than the hour its device's queue let it start in."""
    _, field, per_unit = OBJECTIVE_METRIC[objective]
    b = outcome.batches
    total = 0.0
    for k, dispatch_s, energy_j, duration_s in zip(b.device, b.dispatch_s, b.energy_j,
                                                   b.duration_s, strict=True):
        device = run.fleet.registry.get(outcome.devices[k])
        acc = BatchAccount.compute(run.grid, device, energy_j, duration_s,
                                   run.start + timedelta(seconds=dispatch_s))
        total += getattr(acc, field)
    return total / per_unit


@pytest.mark.parametrize("objective", ["carbon", "cost"])
@pytest.mark.parametrize("pattern", list(ARRIVALS))
def test_optimal_never_loses_to_greedy_on_its_objective(tmp_path: Path, pattern: str,
                                                        objective: str) -> None:
    # GB has no prices: without it every batch's cost is known, so cost compares whole.
    fleet = small_fleet(tmp_path, without_zone="GB" if objective == "cost" else None)
    others = [k for k in ("cost", "carbon", "delay") if k != objective]
    run = run_for(fleet, pattern, (objective, *others))
    result = compare(run, ["greedy", "optimal"])
    greedy, optimal = result.summaries
    assert optimal.served == greedy.served
    ours, theirs = (at_routing_hour(run, o, objective) for o in reversed(result.outcomes))
    assert ours <= theirs + 1e-9 * abs(theirs), (ours, theirs)
    # As accounted (at the hour each batch started), greedy may still gain a hair where its
    # queue pushed batches past an hour boundary into a cheaper hour (0.2% at most here).
    ours, theirs = (getattr(s, OBJECTIVE_METRIC[objective][0]) for s in (optimal, greedy))
    assert ours <= theirs + 5e-3 * abs(theirs), (ours, theirs)


def test_every_strategy_routes_the_same_batches(tmp_path: Path) -> None:
    run = run_for(small_fleet(tmp_path), "poisson-1/s-night", ("carbon",))
    result = compare(run, ["greedy", "carbon", "optimal"])
    dispatched = [sorted(o.batches.dispatch_s) for o in result.outcomes]
    assert dispatched[0] == dispatched[1] == dispatched[2]
    assert len(dispatched[0]) == len(result.trace)
    assert int(result.trace.size.sum()) == len(run.arrivals)


def test_slo_counts_the_wait_to_be_batched(tmp_path: Path) -> None:
    # greedy fills the first H100 until its queue reaches the SLO; counted from the routing
    # tick, the prompts' wait to be batched came on top (p99 30.35 s against a 30 s SLO).
    run = run_for(small_fleet(tmp_path), "poisson-3/s-evening", ("carbon",))
    greedy = compare(run, ["greedy"]).summaries[0]
    assert greedy.served == greedy.requests
    assert greedy.slo_misses == 0 and greedy.p99_s <= SLO_S
    assert greedy.p99_s > 0.5 * SLO_S  # the queue did build up to the target


def test_diurnal_arrivals_follow_the_day() -> None:
    day = diurnal(1.0, 24, seed=5)
    hour = (day.t_s // 3600).astype(int)
    counts = np.bincount(hour, minlength=24)
    assert counts[14] > 4 * counts[2]
    assert len(day) == pytest.approx(86_400, rel=0.05)
    again = diurnal(1.0, 24, seed=5)
    assert np.array_equal(day.t_s, again.t_s)


def test_cost_without_any_price_says_so(tmp_path: Path) -> None:
    fleet = tmp_path / "gb.toml"
    fleet.write_text('[[device]]\nname = "h100"\nkind = "nvidia"\nzone = "GB"\n'
                     'tdp_w = 700.0\nmax_batch_size = 8\nnominal_tokens_per_s = 800.0\n')
    out = CliRunner().invoke(main, ["simulate", "--devices", str(fleet), "--arrivals",
                                    "poisson:0.05", "--hours", "1", "--compare",
                                    "greedy,optimal", "--gap"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if "greedy" in line and "│" in line]
    assert rows and "no prices" in rows[0] and "0.000 │" not in rows[0].split("│")[8]
    assert "no zone of the fleet has price data (GB)" in out.output
    assert "LP lower bound on operational CO2e" in out.output
