"""The packaged grid traces and GridTrace: lookups, trace replay, forecast, errors, packaging."""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.grid.trace import (
    HOURS_IN_TRACE,
    USD_PER_CURRENCY,
    ZONE_PRICE_CURRENCY,
    GridConditions,
    GridTrace,
    parse_zone_csv,
    trace_hour,
)

ZONES = ["AU-NSW", "AU-VIC", "DE-LU", "GB", "US-CAL-CISO"]
DATA = files("pipeline").joinpath("data")
ROOT = Path(__file__).resolve().parents[2]
HEADER = "hour_utc,carbon_g_per_kwh,price_per_mwh,temperature_c\n"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def grid() -> GridTrace:
    return GridTrace()


def test_packaged_zones(grid: GridTrace) -> None:
    assert grid.zones() == ZONES


def test_packaged_data_is_small_and_complete() -> None:
    names = sorted(p.name for p in DATA.iterdir() if p.name.endswith((".csv", ".md")))
    accounting = ["LICENSE-codecarbon.md", "SOURCES-accounting.md", "cpu_power.csv",
                  "embodied_parts.csv"]
    assert sorted(names) == sorted(["SOURCES.md", *accounting] + [f"grid_{z}.csv" for z in ZONES])
    total_bytes = sum(len(DATA.joinpath(n).read_bytes()) for n in names)
    assert total_bytes < 2_700_000


def test_sources_records_licence_lca_and_each_currency() -> None:
    text = DATA.joinpath("SOURCES.md").read_text(encoding="utf-8")
    assert "MIT" in text and "LCA" in text and "Electricity Maps" in text
    for zone, currency in ZONE_PRICE_CURRENCY.items():
        assert f"| {zone} | {currency} |" in text
    assert "| GB | - |" in text


def test_pyproject_ships_the_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["pipeline"]
    assert "data/*.csv" in globs and "data/*.md" in globs


@pytest.mark.parametrize("zone", ZONES)
def test_every_zone_is_a_full_plausible_year(grid: GridTrace, zone: str) -> None:
    trace = grid.trace(zone)
    assert len(trace.carbon_g_per_kwh) == len(trace.temperature_c) == HOURS_IN_TRACE
    assert all(0 < c < 1500 for c in trace.carbon_g_per_kwh)
    assert all(-40 < t < 50 for t in trace.temperature_c)
    if zone == "GB":
        assert trace.price_usd_per_kwh is None
    else:
        assert trace.price_usd_per_kwh is not None
        assert len(trace.price_usd_per_kwh) == HOURS_IN_TRACE


def test_carbon_is_the_lca_column_in_utc(grid: GridTrace) -> None:
    # First rows of the Electricity Maps files: LCA 177.74 (direct 133.1) for DE at 00:00 UTC.
    assert grid.intensity_g_per_kwh("DE-LU", utc(2024, 1, 1, 0)) == 177.74
    assert grid.intensity_g_per_kwh("GB", utc(2024, 1, 1, 1)) == 94.21
    assert grid.intensity_g_per_kwh("US-CAL-CISO", utc(2024, 12, 31, 23)) == 184.53


def test_weather_local_time_becomes_utc(grid: GridTrace) -> None:
    # Open-Meteo local hour 00:00 is 23:00 UTC the day before in Berlin (+1), 07:00 UTC in
    # California (fixed -7 in the file); DE local 01:00 (6.5 C) is 2024-01-01T00:00Z.
    assert grid.temperature_c("DE-LU", utc(2024, 1, 1, 0)) == 6.5
    assert grid.temperature_c("US-CAL-CISO", utc(2024, 1, 1, 7)) == 10.4
    assert grid.temperature_c("GB", utc(2024, 1, 1, 0)) == 7.5


def test_prices_convert_to_usd_per_kwh(grid: GridTrace) -> None:
    # DE-LU 2024-01-01 01:00 CET = 00:00 UTC: 0.01 EUR/MWh; CAISO 00:00 UTC: 50.00 USD/MWh.
    assert grid.price_usd_per_kwh("DE-LU", utc(2024, 1, 1, 0)) == pytest.approx(
        0.01 * USD_PER_CURRENCY["EUR"] / 1000)
    assert grid.price_usd_per_kwh("US-CAL-CISO", utc(2024, 1, 1, 0)) == pytest.approx(0.05)
    # AEMO 2024-01-01 10:00 NEM time (UTC+10) = 00:00 UTC, in AUD.
    assert grid.price_usd_per_kwh("AU-NSW", utc(2024, 1, 1, 0)) == pytest.approx(
        45.09 * USD_PER_CURRENCY["AUD"] / 1000)
    assert grid.price_usd_per_kwh("GB", utc(2024, 6, 1, 12)) is None


def test_trace_hour_indexes_the_leap_year() -> None:
    assert trace_hour(utc(2024, 1, 1, 0)) == 0
    assert trace_hour(utc(2024, 2, 29, 0)) == 59 * 24
    assert trace_hour(utc(2024, 3, 1, 5)) == 60 * 24 + 5
    assert trace_hour(utc(2024, 12, 31, 23)) == HOURS_IN_TRACE - 1
    for k in range(0, HOURS_IN_TRACE, 97):
        assert trace_hour(utc(2024, 1, 1) + timedelta(hours=k)) == k


def test_trace_replay_maps_other_years_by_month_day_hour(grid: GridTrace) -> None:
    for zone in ("DE-LU", "AU-VIC"):
        assert grid.intensity_g_per_kwh(zone, utc(2031, 6, 1, 12)) == grid.intensity_g_per_kwh(
            zone, utc(2024, 6, 1, 12))
    # A non-leap year's Mar 1 is 2024's Mar 1, not Feb 29; a leap year's Feb 29 is 2024's.
    assert trace_hour(utc(2025, 3, 1, 0)) == trace_hour(utc(2024, 3, 1, 0))
    assert trace_hour(utc(2028, 2, 29, 13)) == trace_hour(utc(2024, 2, 29, 13))
    assert trace_hour(utc(2023, 12, 31, 23, 59)) == HOURS_IN_TRACE - 1


def test_times_are_converted_to_utc_and_naive_times_refused() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    assert trace_hour(datetime(2024, 1, 1, 1, 30, tzinfo=berlin_winter)) == 0
    assert trace_hour(datetime(2025, 1, 1, 0, 30, tzinfo=berlin_winter)) == HOURS_IN_TRACE - 1
    with pytest.raises(ValueError, match="naive"):
        trace_hour(datetime(2024, 1, 1))


def test_unknown_zone_lists_the_known_ones(grid: GridTrace) -> None:
    with pytest.raises(ConfigError, match=r"unknown grid zone 'FR' \(known: AU-NSW, .*GB"):
        grid.intensity_g_per_kwh("FR", utc(2024, 1, 1))


def test_forecast_is_consecutive_hours_from_the_start_hour(grid: GridTrace) -> None:
    start = utc(2026, 12, 31, 21, 40)
    got = grid.forecast("GB", start, 5)
    assert [h for h, _ in got] == [utc(2026, 12, 31, 21) + timedelta(hours=k) for k in range(5)]
    assert [v for _, v in got] == [grid.intensity_g_per_kwh("GB", h) for h, _ in got]
    assert got[3][1] == grid.intensity_g_per_kwh("GB", utc(2024, 1, 1, 0))  # wraps the year
    assert grid.forecast("GB", start, 0) == []
    with pytest.raises(ValueError):
        grid.forecast("GB", start, -1)
    with pytest.raises(ValueError, match="naive"):
        grid.forecast("GB", datetime(2024, 1, 1), 2)


def test_lookups_are_fast(grid: GridTrace) -> None:
    grid.intensity_g_per_kwh("DE-LU", utc(2024, 1, 1))
    at = utc(2025, 7, 14, 9, 30)
    t0 = time.perf_counter()
    for _ in range(20_000):
        grid.intensity_g_per_kwh("DE-LU", at)
    assert time.perf_counter() - t0 < 1.0  # about 1 us each; a routing pass makes a handful


def _write_trace(path: Path, price: str = "") -> None:
    rows = [HEADER]
    start = utc(2024, 1, 1)
    for k in range(HOURS_IN_TRACE):
        rows.append(f"{start + timedelta(hours=k):%Y-%m-%dT%H:%MZ},{k % 500 + 1},{price},10.5\n")
    path.write_text("".join(rows), encoding="utf-8")


def test_zones_are_loaded_lazily_and_cached_per_instance(tmp_path: Path) -> None:
    _write_trace(tmp_path / "grid_XX.csv")
    first = GridTrace(tmp_path)
    assert first.zones() == ["XX"]
    assert first.intensity_g_per_kwh("XX", utc(2024, 1, 1, 3)) == 4.0
    (tmp_path / "grid_XX.csv").unlink()
    assert first.temperature_c("XX", utc(2024, 5, 5)) == 10.5  # served from the cache
    with pytest.raises(ConfigError, match="unknown grid zone"):
        GridTrace(tmp_path).trace("XX")  # another instance has its own (empty) cache


def test_a_zone_with_prices_needs_a_known_currency(tmp_path: Path) -> None:
    _write_trace(tmp_path / "grid_XX.csv", price="12.5")
    with pytest.raises(ConfigError, match="currency"):
        GridTrace(tmp_path).trace("XX")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b\n", "columns"),
        (HEADER + "2024-01-01T00:00Z,1,,1\n", "rows"),
    ],
)
def test_malformed_traces_are_config_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_zone_csv("XX", text)


def test_rows_must_be_the_hours_of_2024(tmp_path: Path) -> None:
    _write_trace(tmp_path / "grid_XX.csv")
    text = (tmp_path / "grid_XX.csv").read_text(encoding="utf-8").replace(
        "2024-01-01T00:00Z", "2023-01-01T00:00Z")
    with pytest.raises(ConfigError, match="line 2: should be 2024-01-01T00:00Z"):
        parse_zone_csv("XX", text)
    bad_number = text.replace("2023-01-01T00:00Z,1,", "2024-01-01T00:00Z,x,")
    with pytest.raises(ConfigError, match="grid data for XX"):
        parse_zone_csv("XX", bad_number)


def test_grid_trace_is_all_three_sources() -> None:
    conditions: GridConditions = GridTrace()
    assert conditions.temperature_c("GB", utc(2024, 7, 1, 12)) > 5
