"""Strategies score device options; options carry every metric and the hard limits."""

from __future__ import annotations

import pytest

from pipeline.accounting.account import embodied_carbon_g
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import Conditions
from pipeline.policy import BUILTIN_STRATEGIES, parse_weights
from router.predict.nominal import NominalPredictor
from router.predict.predictor import BatchShape, Prediction
from router.scoring.options import DeviceOption, GridNow, options_for
from router.scoring.strategies import get_strategy, strategy_names
from tests.router.conftest import make_registry

ZONES = {"DIRTY": Conditions(700.0, 0.10, 20.0), "CLEAN": Conditions(20.0, None, 20.0)}


def by_zone(reg: Registry | None = None, zones: dict[str, Conditions] = ZONES) -> GridNow:
    """Each device's conditions (of ``make_registry()`` by default): its zone's."""
    return GridNow({d.name: zones[str(d.zone)] for d in (reg or make_registry()).devices})


def option(name: str, latency_s: float, grams: float, backlog_s: float = 0.0, *,
           energy_j: float = 100.0, water_l: float = 0.0,
           cost_usd: float | None = 0.0) -> DeviceOption:
    device = Device(name=name, kind="cpu", zone="DE-LU")
    return DeviceOption(device, Prediction(latency_s, energy_j, "nominal"), grams, backlog_s,
                        water_l=water_l, cost_usd=cost_usd)


def best(name: str, opts: list[DeviceOption], **kw: object) -> str:
    scores = get_strategy(name, **kw).score(opts)  # type: ignore[arg-type]
    return opts[min(range(len(opts)), key=lambda i: (scores[i], i))].device.name


def test_greedy_scores_registry_order() -> None:
    opts = [option("a", 9.0, 9.0), option("b", 1.0, 1.0)]
    assert get_strategy("greedy").score(opts) == [0.0, 1.0]


def test_round_robin_cycles_through_devices_across_calls() -> None:
    rr = get_strategy("round_robin")
    opts = [option("a", 1.0, 1.0), option("b", 1.0, 1.0), option("c", 1.0, 1.0)]
    picked = []
    for _ in range(4):
        scores = rr.score(opts)
        choice = opts[scores.index(min(scores))]
        rr.chose(choice)
        picked.append(choice.device.name)
    assert picked == ["a", "b", "c", "a"]


def test_carbon_picks_low_intensity_even_if_slower() -> None:
    opts = options_for(make_registry(), BatchShape(4, 80, 256), NominalPredictor(), by_zone(), {})
    by_name = {o.device.name: o for o in opts}
    assert by_name["edge"].prediction.latency_s > by_name["gpu"].prediction.latency_s
    assert best("carbon", opts) == "edge"


def test_carbon_counts_embodied_carbon() -> None:
    opts = options_for(make_registry(), BatchShape(1, 0, 10), NominalPredictor(), by_zone(), {})
    gpu = opts[0]
    expected = embodied_carbon_g(gpu.device.embodied_kgco2e, gpu.prediction.latency_s,
                                 gpu.device.lifetime_years)
    assert gpu.embodied_g == pytest.approx(expected) and gpu.embodied_g > 0
    assert gpu.total_carbon_g == pytest.approx(gpu.carbon_g + gpu.embodied_g)


def test_latency_accounts_for_backlog() -> None:
    opts = [option("fast", 1.0, 5.0, backlog_s=10.0), option("slow", 4.0, 5.0, backlog_s=0.0)]
    assert best("latency", opts) == "slow"
    assert best("latency", [option("fast", 1.0, 5.0), option("slow", 4.0, 5.0)]) == "fast"


def test_weighted_normalises_so_weights_mean_what_they_say() -> None:
    # Carbon in grams and latency in seconds differ by orders of magnitude; after min-max
    # scaling a 3:1 weight decides as 3:1, whatever the units.
    a = option("a", latency_s=100.0, grams=0.001)  # clean, slow
    b = option("b", latency_s=1.0, grams=0.004)  # dirty, fast
    assert best("weighted", [a, b], weights={"carbon": 3, "latency": 1}) == "a"
    assert best("weighted", [a, b], weights={"carbon": 1, "latency": 3}) == "b"
    scores = get_strategy("weighted", {"carbon": 3, "latency": 1}).score([a, b])
    assert scores == pytest.approx([0.25, 0.75])


def test_weighted_treats_missing_price_as_most_expensive() -> None:
    a = option("a", 1.0, 1.0, cost_usd=None)
    b = option("b", 1.0, 1.0, cost_usd=0.5)
    assert get_strategy("weighted", {"cost": 1}).score([a, b]) == [1.0, 0.0]


def test_weights_are_validated_and_normalised() -> None:
    assert parse_weights("carbon=3, latency=1") == {"carbon": 0.75, "latency": 0.25}
    for bad, msg in [("speed=1", "unknown metric"), ("carbon=-1", ">= 0"),
                     ("carbon", "METRIC=NUMBER"), ("carbon=0", "at least one")]:
        with pytest.raises(ConfigError, match=msg):
            parse_weights(bad)


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="greedy, round_robin, carbon, latency, weighted"):
        get_strategy("fastest")
    assert strategy_names()[:len(BUILTIN_STRATEGIES)] == list(BUILTIN_STRATEGIES)


def test_options_carry_water_cost_and_exclusions() -> None:
    reg = make_registry()
    opts = options_for(reg, BatchShape(6, 60, 192), NominalPredictor(), by_zone(reg), {"edge": 3.0},
                       alive={"gpu"}, memory_need=lambda d, s: 4 * 1024**3)
    assert [o.device.name for o in opts] == ["gpu", "edge"]  # cpu's max batch is 4
    gpu, edge = opts
    assert gpu.excluded is None and edge.excluded == "no live worker"
    assert edge.backlog_s == 3.0 and gpu.backlog_s == 0.0
    assert gpu.cost_usd is not None and gpu.cost_usd > 0 and edge.cost_usd is None
    assert gpu.water_l > 0


def test_memory_limit_excludes_a_device() -> None:
    reg = Registry(devices=[Device(name="small", kind="cpu", zone="DE-LU", memory_gb=1.0)])
    zones = {"DE-LU": Conditions(300.0, None, None)}
    opt = options_for(reg, BatchShape(2, 10, 10), NominalPredictor(), by_zone(reg, zones), {},
                      memory_need=lambda d, s: 2 * 1024**3)[0]
    assert opt.excluded is not None and "2.00 GiB > 1 GiB" in opt.excluded


def test_carbon_formula_uses_pue_and_intensity() -> None:
    opt = options_for(make_registry(), BatchShape(1, 0, 10), NominalPredictor(), by_zone(), {})[0]
    assert opt.carbon_g == pytest.approx(opt.prediction.energy_j / 3.6e6 * 1.1 * 700.0)
