"""Strategies choose among device options; options exclude devices too small for the batch."""

from __future__ import annotations

import pytest

from pipeline.devices import Device, Registry
from pipeline.errors import ConfigError
from router.nominal import NominalPredictor
from router.predictor import BatchShape, Prediction
from router.strategies import (
    DeviceOption,
    carbon_g,
    get_strategy,
    options_for,
    strategy_names,
)
from tests.router.conftest import make_registry


def option(name: str, latency_s: float, grams: float, backlog_s: float = 0.0) -> DeviceOption:
    device = Device(name=name, kind="cpu")
    return DeviceOption(device, Prediction(latency_s, 100.0, "nominal"), grams, backlog_s)


def test_greedy_takes_the_first_candidate() -> None:
    opts = [option("a", 9.0, 9.0), option("b", 1.0, 1.0)]
    assert get_strategy("greedy").choose(opts).device.name == "a"


def test_carbon_picks_low_intensity_even_if_slower() -> None:
    reg = make_registry()
    shape = BatchShape(4, 80, 256)
    opts = options_for(reg, shape, NominalPredictor(), {"DIRTY": 700.0, "CLEAN": 20.0}, {})
    by_name = {o.device.name: o for o in opts}
    assert by_name["edge"].prediction.latency_s > by_name["gpu"].prediction.latency_s
    assert get_strategy("carbon").choose(opts).device.name == "edge"


def test_carbon_ties_broken_by_finish() -> None:
    opts = [option("a", 5.0, 1.0), option("b", 2.0, 1.0), option("c", 1.0, 2.0)]
    assert get_strategy("carbon").choose(opts).device.name == "b"


def test_latency_accounts_for_backlog() -> None:
    opts = [option("fast", 1.0, 5.0, backlog_s=10.0), option("slow", 4.0, 5.0, backlog_s=0.0)]
    assert get_strategy("latency").choose(opts).device.name == "slow"
    idle = [option("fast", 1.0, 5.0), option("slow", 4.0, 5.0)]
    assert get_strategy("latency").choose(idle).device.name == "fast"


def test_latency_ties_broken_by_carbon() -> None:
    opts = [option("a", 2.0, 3.0), option("b", 2.0, 1.0)]
    assert get_strategy("latency").choose(opts).device.name == "b"


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="greedy, carbon, latency"):
        get_strategy("fastest")
    assert strategy_names() == ["greedy", "carbon", "latency"]


def test_options_exclude_devices_that_cannot_take_the_batch() -> None:
    reg = make_registry()
    opts = options_for(reg, BatchShape(6, 60, 192), NominalPredictor(),
                       {"DIRTY": 700.0, "CLEAN": 20.0}, {"edge": 3.0})
    assert [o.device.name for o in opts] == ["gpu", "edge"]
    assert opts[1].backlog_s == 3.0 and opts[0].backlog_s == 0.0
    assert get_strategy("greedy").choose(opts).device.name == "gpu"


def test_no_candidate_is_a_config_error() -> None:
    reg = Registry(devices=[Device(name="tiny", kind="cpu", max_batch_size=1)])
    opts = options_for(reg, BatchShape(2, 10, 10), NominalPredictor(), {"DE-LU": 300.0}, {})
    with pytest.raises(ConfigError):
        get_strategy("carbon").choose(opts)


def test_carbon_formula() -> None:
    # 3.6 MJ = 1 kWh, at PUE 1.5 and 400 g/kWh: 600 g.
    assert carbon_g(3.6e6, 1.5, 400.0) == pytest.approx(600.0)
    opt = options_for(make_registry(), BatchShape(1, 0, 10), NominalPredictor(),
                      {"DIRTY": 700.0, "CLEAN": 20.0}, {})[0]
    assert opt.carbon_g == pytest.approx(opt.prediction.energy_j / 3.6e6 * 1.1 * 700.0)
