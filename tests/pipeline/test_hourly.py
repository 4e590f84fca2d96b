"""Readers of the publishers' layouts on slices copied from the reference data (first 48 rows of
DE-LU 2024: Electricity Maps carbon, ENTSO-E price, Open-Meteo weather), and the offline
same-hour forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import ConfigError
from pipeline.grid.forecast import same_hour_forecast
from pipeline.grid.hourly import (
    ElectricityMapsFolder,
    HourlySeries,
    PriceFolder,
    WeatherFolder,
    read_electricity_maps_csv,
    read_open_meteo_json,
    read_price_csv,
)
from pipeline.grid.trace import GridTrace

HOURLY = Path(__file__).resolve().parents[1] / "fixtures" / "hourly"
H0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_electricity_maps_csv_lca_and_direct() -> None:
    text = (HOURLY / "DE-LU_2024_hourly.csv").read_text(encoding="utf-8")
    lca = read_electricity_maps_csv(text)
    assert len(lca.values) == 48
    assert lca.at(H0) == 177.74 and lca.at(H0 + timedelta(hours=2, minutes=59)) == 183.69
    assert read_electricity_maps_csv(text, basis="direct").at(H0) == 133.1
    # the same figure as the packaged trace, which was built from the full file
    assert GridTrace().intensity_g_per_kwh("DE-LU", H0) == 177.74


def test_electricity_maps_folder_is_a_carbon_source(tmp_path: Path) -> None:
    folder = ElectricityMapsFolder(HOURLY)
    assert folder.intensity_g_per_kwh("DE-LU", H0 + timedelta(hours=1)) == 179.08
    with pytest.raises(ConfigError, match="no value for 2024-01-03T00:00Z"):
        folder.intensity_g_per_kwh("DE-LU", H0 + timedelta(days=2))
    with pytest.raises(ConfigError, match="no Electricity Maps file GB_"):
        folder.intensity_g_per_kwh("GB", H0)


def test_price_csv_local_time_to_utc() -> None:
    text = (HOURLY / "DE-LU_2024_prices.csv").read_text(encoding="utf-8")
    series, currency = read_price_csv(text, ZoneInfo("Europe/Berlin"))
    assert currency == "EUR"
    # 2024-01-01 01:00 Berlin (CET, UTC+1) is 00:00 UTC: 0.01 EUR/MWh
    assert series.at(H0) == 0.01
    assert series.at(H0 - timedelta(hours=1)) == 0.1


def test_open_meteo_fixed_offset_to_utc() -> None:
    series = read_open_meteo_json((HOURLY / "DE-LU_2024_weather.json").read_text())
    # local 01:00 with utc_offset_seconds=3600 is 00:00 UTC: 6.5 C
    assert series.at(H0) == 6.5 and series.at(H0 - timedelta(hours=1)) == 6.2
    assert series.at(H0) == GridTrace().temperature_c("DE-LU", H0)


@pytest.mark.parametrize(("reader", "text", "match"), [
    ("em", "Datetime (UTC),x\n", "needs columns"),
    ("em", f"Datetime (UTC),{'Carbon Intensity gCO₂eq/kWh (LCA)'}\n2024-01-01 00:00:00,abc\n",
     "line 2"),
    ("price", "Datetime,Price\n", "header must be"),
    ("price", "Datetime,Price (EUR/MWh)\n2024-01-01 00:00:00,1\nbad,2\n", "line 3"),
    ("weather", "{}", "not an Open-Meteo"),
])
def test_bad_files_name_the_line(reader: str, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        if reader == "em":
            read_electricity_maps_csv(text)
        elif reader == "price":
            read_price_csv(text, UTC)
        else:
            read_open_meteo_json(text)


def test_price_and_weather_folders_are_grid_sources(tmp_path: Path) -> None:
    (tmp_path / "DE-LU_2024.csv").write_bytes((HOURLY / "DE-LU_2024_prices.csv").read_bytes())
    (tmp_path / "DE-LU_2024.json").write_bytes((HOURLY / "DE-LU_2024_weather.json").read_bytes())
    prices = PriceFolder(tmp_path, {"DE-LU": ZoneInfo("Europe/Berlin")})
    # 0.1 EUR/MWh at 23:00 UTC x 1.08 USD/EUR / 1000 = 0.000108 USD/kWh, the packaged figure
    at = H0 - timedelta(hours=1)
    assert prices.price_usd_per_kwh("DE-LU", at) == pytest.approx(0.000108)
    assert prices.price_usd_per_kwh("GB", at) is None
    assert prices.price_usd_per_kwh("DE-LU", H0) == GridTrace().price_usd_per_kwh("DE-LU", H0)
    assert WeatherFolder(tmp_path).temperature_c("DE-LU", H0) == 6.5
    with pytest.raises(ConfigError, match="no USD rate for EUR"):
        PriceFolder(tmp_path, usd_per={"USD": 1.0}).price_usd_per_kwh("DE-LU", at)
    with pytest.raises(ConfigError, match="no Open-Meteo file GB_"):
        WeatherFolder(tmp_path).temperature_c("GB", H0)


def test_duplicate_hours_are_averaged() -> None:
    s = HourlySeries.from_points("x", [(H0, 1.0), (H0 + timedelta(minutes=30), 3.0)])
    assert s.values == {H0: 2.0}


class DailyPattern:
    """Intensity = 100 + hour of day + 10 x days since 2024-01-01 (so the mean is checkable)."""

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        return 100.0 + at.hour + 10.0 * (at - H0).days


def test_same_hour_forecast_by_hand() -> None:
    start = datetime(2024, 1, 10, 5, 40, tzinfo=UTC)  # day 9, forecast from 05:00
    points = same_hour_forecast(DailyPattern(), "Z", start, 48, days=3)
    assert len(points) == 48 and points[0][0] == start.replace(minute=0)
    # 05:00: days 8, 7, 6 at 05:00 -> 100 + 5 + 10 x (8 + 7 + 6) / 3 = 175
    assert points[0][1] == pytest.approx(175.0)
    # 04:00 next day (k = 23): 04:00 of days 9, 8, 7 -> 104 + 80 = 184
    assert points[23][1] == pytest.approx(184.0)
    with pytest.raises(ValueError, match=r"1\.\.72"):
        same_hour_forecast(DailyPattern(), "Z", start, 73)


def test_offline_forecast_on_the_packaged_trace_uses_only_the_past() -> None:
    grid = GridTrace()
    start = datetime(2024, 6, 15, 12, tzinfo=UTC)
    points = same_hour_forecast(grid, "GB", start, 24, days=7)
    past = [grid.intensity_g_per_kwh("GB", start - timedelta(days=d)) for d in range(1, 8)]
    assert points[0][1] == pytest.approx(sum(past) / 7)
