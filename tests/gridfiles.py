"""Grid files in their publishers' layouts, written for tests (``ECOBATCH_GRID_DIR``).

The layouts are those of the real files (headers copied from the Electricity Maps export and
the packaged sources' price and Open-Meteo files); the figures are made up by each test, which
then checks that exactly those figures come back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.grid.trace import HOURS_IN_TRACE, TRACE_YEAR, GridTrace

EM_HEADER = ("Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
             "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
             "Data Source,Data Estimated,Data Estimation Method")
HOUR = timedelta(hours=1)


def write_em_csv(path: Path, zone: str, first: datetime, lca: Sequence[float | None]) -> Path:
    """An Electricity Maps hourly export: one row per hour from ``first`` (naive UTC); None
    leaves the LCA cell blank."""
    rows = [EM_HEADER]
    for k, value in enumerate(lca):
        cell = "" if value is None else f"{value}"
        rows.append(f"{first + k * HOUR:%Y-%m-%d %H:%M:%S},Country,Zone,{zone},1.0,{cell},"
                    "1.0,1.0,test,false,")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_price_csv(path: Path, currency: str, first: datetime, prices: Sequence[float]) -> Path:
    """A ``Datetime,Price (CUR/MWh)`` file with naive timestamps from ``first``."""
    rows = [f"Datetime,Price ({currency}/MWh)"]
    rows += [f"{first + k * HOUR:%Y-%m-%d %H:%M:%S},{p}" for k, p in enumerate(prices)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_open_meteo(path: Path, utc_offset_s: int, first_local: datetime,
                     temperatures: Sequence[float | None]) -> Path:
    """An Open-Meteo hourly JSON with a fixed ``utc_offset_seconds``."""
    times = [f"{first_local + k * HOUR:%Y-%m-%dT%H:%M}" for k in range(len(temperatures))]
    doc = {"utc_offset_seconds": utc_offset_s, "timezone": "Test/Zone",
           "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
           "hourly": {"time": times, "temperature_2m": list(temperatures)}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def packaged_layout_rows(blank_temperature: Callable[[int], bool]) -> list[str]:
    """``grid_<ZONE>.csv`` lines (header first) with the packaged GB trace's carbon, no
    prices, and the temperature of hour ``k`` left blank where ``blank_temperature(k)``."""
    trace = GridTrace().trace("GB")
    rows = ["hour_utc,carbon_g_per_kwh,price_per_mwh,temperature_c"]
    for k in range(HOURS_IN_TRACE):
        hour = datetime(TRACE_YEAR, 1, 1, tzinfo=UTC) + k * HOUR
        temperature = "" if blank_temperature(k) else f"{trace.temperature_c[k]}"
        rows.append(f"{hour:%Y-%m-%dT%H:%MZ},{trace.carbon_g_per_kwh[k]},,{temperature}")
    return rows


def write_rows(path: Path, rows: Sequence[str]) -> Path:
    """Write CSV lines to ``path``."""
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
