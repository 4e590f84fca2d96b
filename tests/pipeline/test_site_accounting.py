"""Hand-computed accounting with the temperature models, embodied parts, a fixed intensity
and a GPU's host share."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.accounting.account import BatchAccount, pue_at, wue_l_per_kwh_at
from pipeline.accounting.embodied import GREENSKU_LIFETIME_YEARS, device_embodied_kgco2e, load_parts
from pipeline.accounting.site import PUE_MODELS, WUE_MODELS, model
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from tests.pipeline.test_accounting import FixedGrid

AT = datetime(2024, 7, 1, 14, tzinfo=UTC)


def test_temperature_models_by_hand() -> None:
    pue = PUE_MODELS["hyperscale-economizer"]
    assert pue.at(10.0) == 1.12 and pue.at(18.0) == 1.12
    assert pue.at(30.0) == pytest.approx(1.12 + 0.01 * 12)  # 1.24
    assert WUE_MODELS["evaporative"].at(35.0) == pytest.approx(0.2 + 0.08 * 17)  # 1.56
    assert WUE_MODELS["dry-cooler"].at(40.0) == 0.0
    assert all(m.source for m in (*PUE_MODELS.values(), *WUE_MODELS.values()))
    with pytest.raises(ConfigError, match="known: dry-cooler, evaporative"):
        model("wue", "nope")


def test_device_picks_curve_then_model_then_fixed() -> None:
    d = Device(name="d", kind="cpu", zone="DE-LU", pue=1.3, wue_l_per_kwh=0.4,
               pue_model="hyperscale-economizer", wue_model="evaporative")
    assert pue_at(d, 28.0) == pytest.approx(1.22) and wue_l_per_kwh_at(d, 28.0) == pytest.approx(1.0)
    assert pue_at(d, None) == 1.3 and wue_l_per_kwh_at(d, None) == 0.4
    curved = d.model_copy(update={"wue_curve": [(0.0, 0.1), (20.0, 0.5)]})
    assert wue_l_per_kwh_at(curved, 10.0) == pytest.approx(0.3)


def test_embodied_parts_sum_and_override() -> None:
    parts = load_parts()
    assert parts["dram:ddr5-64gb"].kgco2e == 105.4 and parts["ssd:e1s-2tb"].kgco2e == 34.65
    d = Device(name="d", kind="cpu", zone="DE-LU",
               embodied_parts=["dram:ddr5-64gb", "dram:ddr5-64gb", "ssd:e1s-2tb"])
    assert device_embodied_kgco2e(d) == pytest.approx(245.45)
    explicit = Device(name="e", kind="cpu", zone="DE-LU", embodied_kgco2e=80.0,
                      embodied_parts=["nic:100g"])
    assert device_embodied_kgco2e(explicit) == 80.0
    with pytest.raises(ConfigError, match="unknown embodied part"):
        device_embodied_kgco2e(Device(name="x", kind="cpu", zone="DE-LU",
                                      embodied_parts=["gpu:h100"]))
    with pytest.raises(ConfigError, match="line 2"):
        load_parts("part,kgco2e,power_w,source\ncpu:x,abc,1,s\n")


def test_batch_with_host_share_fixed_intensity_and_parts() -> None:
    gpu = Device(name="g", kind="nvidia", zone="GB", pue=1.5, wue_l_per_kwh=0.5,
                 intensity_g_per_kwh=400.0, lifetime_years=GREENSKU_LIFETIME_YEARS,
                 embodied_parts=["dram:ddr5-64gb", "dram:ddr5-64gb", "ssd:e1s-2tb"])
    grid = FixedGrid(intensity=999.0, price=0.2, temperature=25.0)  # intensity overridden
    acct = BatchAccount.compute(grid, gpu, 3.6e6, 3600.0, AT, host_energy_j=0.36e6)
    assert acct.it_energy_j == pytest.approx(3.96e6)  # 1.1 kWh
    assert acct.intensity_g_per_kwh == 400.0
    assert acct.carbon_g == pytest.approx(1.1 * 1.5 * 400)  # 660 g
    assert acct.water_l == pytest.approx(1.1 * (0.5 + 1.5 * 1.8))  # 3.52 L, GB grid 1.8 L/kWh
    assert acct.cost_usd == pytest.approx(1.1 * 1.5 * 0.2)  # 0.33 USD
    assert acct.embodied_carbon_g == pytest.approx(245.45e3 * 3600 / (6 * 365.25 * 86400))
    rows = acct.split([10, 30])
    assert [r["host_energy_j"] for r in rows] == [90_000.0, 270_000.0]
    assert sum(r["energy_j"] for r in rows) == 3.6e6
    no_host = BatchAccount.compute(grid, gpu, 3.6e6, 3600.0, AT)
    assert no_host.host_energy_j is None and no_host.split([1])[0]["host_energy_j"] is None
