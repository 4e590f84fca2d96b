"""Build the packaged hourly grid traces ``pipeline/data/grid_<ZONE>.csv`` from the reference data.

A one-off developer tool, not product code: it is the only place that reads the reference data
beside the project (``../shared/data`` by default, or ``--src``); the product reads only what this
script writes into ``pipeline/data/``. Run it from the project root::

    python scripts/build_grid_data.py [--src ../shared/data] [--out pipeline/data]

Each output row is one UTC hour of 2024 (8784 rows, 2024 is a leap year) with:

- ``hour_utc``: start of the hour, ISO 8601 in UTC (``2024-01-01T00:00Z``);
- ``carbon_g_per_kwh``: Electricity Maps *life-cycle* (LCA) intensity, gCO2e/kWh;
- ``price_per_mwh``: wholesale price in the zone's own currency (see ``SOURCES.md``), empty
  where the zone has no price file;
- ``temperature_c``: Open-Meteo ``temperature_2m``, degrees C.

Time bases differ by source and are all converted to UTC here:

- carbon: already UTC (``Datetime (UTC)``);
- prices: AEMO (AU-*) in NEM market time, fixed UTC+10 all year; ENTSO-E via RTE eco2mix (DE-LU)
  in Europe/Berlin local time with daylight saving; CAISO OASIS (US-CAL-CISO) already UTC;
- weather: Open-Meteo applies one fixed ``utc_offset_seconds`` to the whole series (the offset
  current when the data was requested, not per timestamp), so local time minus that offset is UTC.

Hours missing after conversion (edges of the year shifted out by the offset, a missing day) are
filled with the same hour of the previous day, else of the next day; duplicate hours are averaged.
The number of filled hours per series is written to ``SOURCES.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.grid.trace import TRACE_YEAR, USD_PER_CURRENCY, ZONE_PRICE_CURRENCY

ZONES = ("AU-NSW", "AU-VIC", "DE-LU", "GB", "US-CAL-CISO")
LCA_COLUMN = "Carbon Intensity gCO₂eq/kWh (LCA)"
HOUR = timedelta(hours=1)
YEAR_START = datetime(TRACE_YEAR, 1, 1, tzinfo=UTC)
N_HOURS = (datetime(TRACE_YEAR + 1, 1, 1, tzinfo=UTC) - YEAR_START) // HOUR

# How each price file's naive timestamps map to UTC (see the module docstring).
PRICE_TIME_BASIS: dict[str, tuple[str, Callable[[datetime], datetime]]] = {
    "AU-NSW": ("AEMO NEM time, fixed UTC+10", lambda t: t.replace(tzinfo=timezone(10 * HOUR))),
    "AU-VIC": ("AEMO NEM time, fixed UTC+10", lambda t: t.replace(tzinfo=timezone(10 * HOUR))),
    "DE-LU": ("Europe/Berlin local time (CET/CEST)",
              lambda t: t.replace(tzinfo=ZoneInfo("Europe/Berlin"))),
    "US-CAL-CISO": ("UTC (CAISO INTERVALSTARTTIME_GMT)", lambda t: t.replace(tzinfo=UTC)),
}

LICENCE = "repository MIT"


def hour_index(t: datetime) -> int | None:
    """Index of the UTC hour of ``t`` in the trace year, or None outside it."""
    i = (t.astimezone(UTC) - YEAR_START) // HOUR
    return i if 0 <= i < N_HOURS else None


def to_series(points: Iterable[tuple[datetime, float]]) -> tuple[list[float], int]:
    """Hourly series of the trace year from (time, value) points; returns it and the fill count."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, v in points:
        i = hour_index(t)
        if i is not None:
            buckets[i].append(v)
    series: list[float | None] = [None] * N_HOURS
    for i, vs in buckets.items():
        series[i] = sum(vs) / len(vs)
    filled = 0
    for i in range(24, N_HOURS):  # forward pass: same hour of the previous day
        if series[i] is None and series[i - 24] is not None:
            series[i], filled = series[i - 24], filled + 1
    for i in range(N_HOURS - 25, -1, -1):  # backward pass: same hour of the next day
        if series[i] is None and series[i + 24] is not None:
            series[i], filled = series[i + 24], filled + 1
    if any(v is None for v in series):
        raise SystemExit("a gap longer than the data around it cannot be filled")
    return [float(v) for v in series if v is not None], filled


def read_carbon(src: Path, zone: str) -> list[tuple[datetime, float]]:
    """(UTC hour, LCA gCO2e/kWh) points of a zone's Electricity Maps file."""
    with (src / "carbon" / f"{zone}_2024_hourly.csv").open(encoding="utf-8") as f:
        return [(datetime.fromisoformat(r["Datetime (UTC)"]).replace(tzinfo=UTC),
                 float(r[LCA_COLUMN])) for r in csv.DictReader(f)]


def read_prices(src: Path, zone: str) -> tuple[list[tuple[datetime, float]], str]:
    """(UTC hour, price per MWh) points of a zone's price file and the file's price header."""
    with (src / "prices" / f"{zone}_2024.csv").open(encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        localise = PRICE_TIME_BASIS[zone][1]
        return [(localise(datetime.fromisoformat(t)), float(p)) for t, p in reader], header[1]


def read_weather(src: Path, zone: str) -> tuple[list[tuple[datetime, float]], str]:
    """(UTC hour, temperature C) points of a zone's Open-Meteo file and its time-zone note."""
    data = json.loads((src / "weather" / f"{zone}_2024.json").read_text(encoding="utf-8"))
    offset = timezone(timedelta(seconds=data["utc_offset_seconds"]))
    hourly = data["hourly"]
    points = [(datetime.fromisoformat(t).replace(tzinfo=offset), float(v))
              for t, v in zip(hourly["time"], hourly["temperature_2m"], strict=True)
              if v is not None]
    note = f"{data['timezone']}, fixed utc_offset_seconds={data['utc_offset_seconds']}"
    return points, note


def fmt(v: float, decimals: int) -> str:
    """Shortest fixed-point text of ``v`` at ``decimals`` places."""
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def build_zone(src: Path, out: Path, zone: str) -> dict[str, str]:
    """Write ``grid_<zone>.csv``; return what SOURCES.md says about the zone."""
    carbon, carbon_filled = to_series(read_carbon(src, zone))
    weather_points, tz_note = read_weather(src, zone)
    temperature, temp_filled = to_series(weather_points)
    prices: list[float] | None = None
    info = {"zone": zone, "weather_tz": tz_note, "filled": f"carbon {carbon_filled}, "
            f"temperature {temp_filled}", "currency": "-", "price_basis": "no price file",
            "price_header": "-"}
    if (src / "prices" / f"{zone}_2024.csv").exists():
        points, header = read_prices(src, zone)
        prices, price_filled = to_series(points)
        info.update(currency=ZONE_PRICE_CURRENCY[zone], price_basis=PRICE_TIME_BASIS[zone][0],
                    price_header=header)
        info["filled"] += f", price {price_filled}"
    with (out / f"grid_{zone}.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["hour_utc", "carbon_g_per_kwh", "price_per_mwh", "temperature_c"])
        for i in range(N_HOURS):
            hour = (YEAR_START + i * HOUR).strftime("%Y-%m-%dT%H:%MZ")
            price = "" if prices is None else fmt(prices[i], 2)
            w.writerow([hour, fmt(carbon[i], 2), price, fmt(temperature[i], 1)])
    return info


SOURCES_HEAD = """# Packaged grid traces: sources and licences

Written by `scripts/build_grid_data.py`; do not edit by hand. One file per zone,
`grid_<ZONE>.csv`, one row per UTC hour of {year} ({n} rows): `hour_utc` (ISO 8601, UTC, start of
the hour), `carbon_g_per_kwh`, `price_per_mwh` (zone currency below; empty when the zone has no
price data), `temperature_c`.

## Sources

All three series come from github.com/HewlettPackard/green-dcc (commit 3f6ea95cb835).
Licence: {licence}.

- `carbon_g_per_kwh`: green-dcc `data/carbon_intensity/`, hourly 2024 CSV files whose data
  come from Electricity Maps. Column used: `{lca}`,
  the **life-cycle (LCA)** intensity, not the direct one.
- `price_per_mwh`: green-dcc `data/electricity_prices/processed/`: AEMO (AU-NSW, AU-VIC),
  ENTSO-E via RTE eco2mix (DE-LU), CAISO OASIS day-ahead LMP at TH_NP15 (US-CAL-CISO).
- `temperature_c`: Open-Meteo hourly `temperature_2m`, via green-dcc `data/weather/`.

## Zones

| zone | price currency | price file header | price time basis | weather time zone | hours filled |
|---|---|---|---|---|---|
"""

SOURCES_TAIL = """
## Notes

- AU-NSW and AU-VIC prices are AEMO regional reference prices (RRP), which AEMO publishes in
  **AUD/MWh**. The green-dcc file header says `USD/MWh`, but its extraction script
  (`extract_prices_AU.py`) averages the AEMO RRP to hours without any currency conversion, so the
  figures are AUD and are recorded as AUD here.
- AEMO timestamps are interval-ending in NEM time (UTC+10 all year, no daylight saving); the
  source floored them to the hour, which leaves one duplicate hour at each month boundary (the
  previous month's last interval); duplicates are averaged.
- DE-LU has no prices for 2024-01-31 in the source; those hours repeat 2024-01-30.
- Conversion to USD uses fixed rates (`pipeline.grid.trace.USD_PER_CURRENCY`):
  {rates}; approximately the 2024 annual averages of the ECB and RBA reference rates.
- Missing hours are filled with the same hour of the previous (else next) day; counts above.
- The traces are for {year}; `pipeline.grid.trace.GridTrace` replays them for any other year by month,
  day and hour ("trace replay").
"""


def write_sources(out: Path, infos: list[dict[str, str]]) -> None:
    """Write SOURCES.md with the source and licence lines and each zone's price currency."""
    head = SOURCES_HEAD.format(year=TRACE_YEAR, n=N_HOURS, lca=LCA_COLUMN, licence=LICENCE)
    rows = [f"| {i['zone']} | {i['currency']} | {i['price_header']} | {i['price_basis']} | "
            f"{i['weather_tz']} | {i['filled']} |" for i in infos]
    rates = ", ".join(f"1 {c} = {r} USD" for c, r in USD_PER_CURRENCY.items() if c != "USD")
    text = head + "\n".join(rows) + "\n" + SOURCES_TAIL.format(rates=rates, year=TRACE_YEAR)
    (out / "SOURCES.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Build every zone's trace and SOURCES.md."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "pipeline" / "data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    infos = [build_zone(args.src, args.out, zone) for zone in ZONES]
    write_sources(args.out, infos)
    for info in infos:
        print(f"{info['zone']}: filled {info['filled']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
