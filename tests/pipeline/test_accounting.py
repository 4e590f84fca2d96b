"""Accounting formulas, PUE curves, exact apportioning and the batch account."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from pipeline.accounting.account import (
    DEFAULT_GRID_WATER_L_PER_KWH,
    BatchAccount,
    account_batch,
    apportion,
    cost_usd,
    embodied_carbon_g,
    grid_water_l_per_kwh,
    interpolate_clamped,
    operational_carbon_g,
    pue_at,
    water_l,
)
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.grid.trace import GridTrace
from pipeline.ledger.models import Result

AT = datetime(2025, 3, 4, 15, 20, tzinfo=UTC)


class FixedGrid:
    """A GridConditions with the same conditions in every zone and hour."""

    def __init__(self, intensity: float, price: float | None, temperature: float) -> None:
        self.intensity, self.price, self.temperature = intensity, price, temperature

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        return self.intensity

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        return self.price

    def temperature_c(self, zone: str, at: datetime) -> float:
        return self.temperature


def device(**kw: object) -> Device:
    base: dict[str, object] = {"name": "d", "kind": "cpu", "pue": 1.5, "wue_l_per_kwh": 0.5,
                               "embodied_kgco2e": 100.0, "lifetime_years": 4.0, "zone": "DE-LU"}
    return Device.model_validate(base | kw)


def assert_exact_sum(parts: list[float], total: float) -> None:
    assert sum(parts) == total
    assert math.fsum(parts) == total
    assert sum(reversed(parts)) == total


# --- formulas, hand-computed: 7.2e6 J is 2 kWh ---------------------------------------------


def test_operational_carbon() -> None:
    assert operational_carbon_g(7.2e6, 1.5, 300.0) == pytest.approx(900.0)  # 2 x 1.5 x 300


def test_embodied_carbon_amortises_over_lifetime() -> None:
    # 100 kg over 4 years of 365.25 days; one hour busy: 1e5 g x 3600 / 126,230,400 s.
    assert embodied_carbon_g(100.0, 3600.0, 4.0) == pytest.approx(2.851927, rel=1e-6)
    assert embodied_carbon_g(100.0, 4 * 365.25 * 86400, 4.0) == pytest.approx(100_000.0)


def test_water_is_site_plus_grid() -> None:
    assert water_l(7.2e6, 0.5, 1.5, 1.8) == pytest.approx(6.4)  # 2 x (0.5 + 1.5 x 1.8)
    assert water_l(0.0, 0.5, 1.5, 1.8) == 0.0


def test_cost_uses_facility_energy() -> None:
    assert cost_usd(7.2e6, 1.5, 0.1) == pytest.approx(0.3)  # 2 x 1.5 x 0.1
    assert cost_usd(7.2e6, 1.5, -0.02) == pytest.approx(-0.06)  # negative prices happen
    assert cost_usd(7.2e6, 1.5, None) is None


def test_grid_water_has_a_documented_default() -> None:
    assert grid_water_l_per_kwh("DE-LU") == DEFAULT_GRID_WATER_L_PER_KWH == 1.8
    assert grid_water_l_per_kwh("NOWHERE") == DEFAULT_GRID_WATER_L_PER_KWH
    assert grid_water_l_per_kwh("US-CAL-CISO") == 3.14


# --- PUE over temperature ----------------------------------------------------------------------


def test_pue_curve_interpolates_and_clamps() -> None:
    d = device(pue_curve=[[30.0, 1.5], [10.0, 1.1], [20.0, 1.2]])  # unsorted on purpose
    assert pue_at(d, 15.0) == pytest.approx(1.15)
    assert pue_at(d, 25.0) == pytest.approx(1.35)
    assert pue_at(d, 20.0) == pytest.approx(1.2)
    assert pue_at(d, -5.0) == 1.1
    assert pue_at(d, 45.0) == 1.5
    assert pue_at(d, None) == 1.5  # no temperature: the fixed pue


def test_fixed_pue_without_curve() -> None:
    assert pue_at(device(pue=1.3), 35.0) == 1.3


def test_interpolation_edge_cases() -> None:
    assert interpolate_clamped([(5.0, 2.0)], 100.0) == 2.0
    with pytest.raises(ValueError):
        interpolate_clamped([], 1.0)


# --- apportion ---------------------------------------------------------------------------------


def test_apportion_by_weights() -> None:
    parts = apportion(10.0, [1, 3, 0, 6])
    assert parts == pytest.approx([1.0, 3.0, 0.0, 6.0])
    assert parts[2] == 0.0
    assert_exact_sum(parts, 10.0)


def test_apportion_zero_weights_split_evenly() -> None:
    parts = apportion(1.0, [0, 0, 0])
    assert parts == pytest.approx([1 / 3] * 3)
    assert_exact_sum(parts, 1.0)


def test_apportion_edge_cases() -> None:
    assert apportion(5.5, [7]) == [5.5]
    assert apportion(0.0, [1, 2]) == [0.0, 0.0]
    assert_exact_sum(apportion(-0.3, [1, 1, 1]), -0.3)
    for bad in ([], [1, -1], [1, math.nan], [math.inf]):
        with pytest.raises(ValueError):
            apportion(1.0, bad)
    with pytest.raises(ValueError):
        apportion(math.nan, [1])


def test_apportion_sums_exactly_over_random_cases() -> None:
    rng = random.Random(20240229)
    for _ in range(2000):
        n = rng.randint(1, 64)
        weights = [rng.choice([0, 0, 1, rng.randint(1, 4000)]) for _ in range(n)]
        total = rng.choice([1.0, -1.0]) * rng.uniform(0, 1) * 10 ** rng.randint(-9, 9)
        parts = apportion(total, weights)
        assert len(parts) == n
        assert_exact_sum(parts, total)
        if sum(weights):
            for w, p in zip(weights, parts, strict=True):  # off by at most 1 ulp of the total
                exact = total * w / sum(weights)
                assert abs(p - exact) <= 2 * math.ulp(total) + math.ulp(exact)
                if w == 0:
                    assert p == 0.0


def test_apportion_float_weights_and_awkward_totals() -> None:
    rng = random.Random(7)
    for total in (0.1 + 0.2, 1e-300, 123456789.123, 2.0**60, 5e-324, -1e-5):
        for _ in range(50):
            weights = [rng.random() for _ in range(rng.randint(1, 20))]
            assert_exact_sum(apportion(total, weights), total)


# --- the batch account ---------------------------------------------------------------------


def test_batch_account_totals() -> None:
    grid = FixedGrid(intensity=300.0, price=0.1, temperature=15.0)
    d = device(pue_curve=[[10.0, 1.1], [20.0, 1.3]])  # 1.2 at 15 C
    acc = BatchAccount.compute(grid, d, energy_j=7.2e6, duration_s=3600.0, at=AT)
    assert (acc.device, acc.zone, acc.at, acc.ambient_c) == ("d", "DE-LU", AT, 15.0)
    assert acc.pue == pytest.approx(1.2)
    assert acc.carbon_g == pytest.approx(720.0)  # 2 kWh x 1.2 x 300
    assert acc.embodied_carbon_g == pytest.approx(2.851927, rel=1e-6)
    assert acc.water_l == pytest.approx(2 * (0.5 + 1.2 * 1.8))
    assert acc.cost_usd == pytest.approx(0.24)  # 2 x 1.2 x 0.1
    assert acc.intensity_g_per_kwh == 300.0


def test_split_rows_sum_exactly_to_the_batch() -> None:
    acc = BatchAccount.compute(FixedGrid(251.3, 0.0731, 22.0), device(), 1234.567, 3.21, AT)
    tokens = [37, 0, 129, 64, 5]
    rows = acc.split(tokens)
    assert len(rows) == 5 and rows[1]["energy_j"] == 0.0
    for key in ("energy_j", "carbon_g", "embodied_carbon_g", "water_l", "cost_usd"):
        assert_exact_sum([float(r[key] or 0.0) for r in rows], getattr(acc, key))
    assert all(r["intensity_g_per_kwh"] == 251.3 for r in rows)
    assert rows[2]["energy_j"] == pytest.approx(1234.567 * 129 / 235)


def test_rows_match_result_columns_and_cost_is_none_without_price() -> None:
    rows = account_batch(FixedGrid(100.0, None, 10.0), device(zone="GB"), 50.0, 1.0, AT, [1, 2])
    assert set(rows[0]) <= set(Result.model_fields)
    assert [r["cost_usd"] for r in rows] == [None, None]


def test_account_batch_with_the_packaged_traces() -> None:
    grid = GridTrace()
    rows = account_batch(grid, device(zone="DE-LU"), 3.6e6, 10.0, AT, [10, 30])
    intensity = grid.intensity_g_per_kwh("DE-LU", AT)
    assert rows[0]["intensity_g_per_kwh"] == intensity
    assert rows[0]["carbon_g"] + rows[1]["carbon_g"] == pytest.approx(1.5 * intensity)
    assert rows[0]["cost_usd"] is not None
    with pytest.raises(ConfigError, match="unknown grid zone"):
        account_batch(grid, device(zone="XX"), 1.0, 1.0, AT, [1])
    fixed = account_batch(grid, device(zone="DE-LU", intensity_g_per_kwh=50.0), 3.6e6, 10.0,
                          AT, [1])
    assert fixed[0]["intensity_g_per_kwh"] == 50.0  # the registry's fixed figure wins
