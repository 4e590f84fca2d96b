"""Readers of hourly grid and weather files in their publishers' layouts, and a carbon source
over a folder of Electricity Maps exports.

- Electricity Maps hourly CSV: ``Datetime (UTC)``, ``Carbon Intensity gCO₂eq/kWh (direct)``,
  ``Carbon Intensity gCO₂eq/kWh (LCA)``, ... (one file per zone and year,
  ``<ZONE>_<YEAR>_hourly.csv``, as the Electricity Maps data portal names them).
- Price CSV: ``Datetime,Price (<CUR>/MWh)``, naive local timestamps whose time basis the caller
  gives (market time differs by zone; see ``pipeline/data/SOURCES.md``).
- Open-Meteo JSON: ``utc_offset_seconds`` and ``hourly.time`` / ``hourly.temperature_2m``;
  Open-Meteo applies one fixed offset to the whole series, so local minus offset is UTC.

Every reader returns an :class:`HourlySeries` keyed by the start of each UTC hour; a bad row is
a :class:`~pipeline.errors.ConfigError` naming its line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final

from pipeline import intensity_signal
from pipeline.errors import ConfigError
from pipeline.intensity_signal import IntensityReading

EM_TIME: Final = "Datetime (UTC)"
EM_COLUMNS: Final = {"lca": "Carbon Intensity gCO₂eq/kWh (LCA)",
                     "direct": "Carbon Intensity gCO₂eq/kWh (direct)"}
_PRICE_HEADER = re.compile(r"^Price \(([A-Z]{3})/MWh\)$")


def hour_start(at: datetime) -> datetime:
    """Start of the UTC hour holding ``at``.

    Raises:
        ValueError: ``at`` is naive.
    """
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass a timezone-aware UTC time")
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class HourlySeries:
    """Values by UTC hour; duplicate hours (a clock change, a doubled row) are averaged.

    Attributes:
        name: what the values are, for error messages.
        values: value at the start of each UTC hour.
    """

    name: str
    values: dict[datetime, float]

    @classmethod
    def from_points(cls, name: str, points: Iterable[tuple[datetime, float]]) -> HourlySeries:
        """Bucket ``(time, value)`` points into UTC hours, averaging duplicates."""
        sums: dict[datetime, list[float]] = {}
        for t, v in points:
            sums.setdefault(hour_start(t), []).append(v)
        return cls(name, {h: sum(vs) / len(vs) for h, vs in sorted(sums.items())})

    def at(self, at: datetime) -> float:
        """The value of the hour holding ``at``.

        Raises:
            ConfigError: the series has no such hour (the message gives its span).
        """
        hour = hour_start(at)
        try:
            return self.values[hour]
        except KeyError:
            span = f"{min(self.values):%Y-%m-%dT%H}Z..{max(self.values):%Y-%m-%dT%H}Z" \
                if self.values else "empty"
            raise ConfigError(f"{self.name}: no value for {hour:%Y-%m-%dT%H:00Z} ({span})") from None


def _rows(name: str, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise ConfigError(f"{name}: empty file")
    return header, [(line, row) for line, row in enumerate(reader, start=2) if row]


def read_electricity_maps_csv(text: str, name: str = "carbon", *,
                              basis: str = "lca") -> HourlySeries:
    """gCO2e/kWh by hour from an Electricity Maps hourly CSV (``basis`` ``lca`` or ``direct``).

    Raises:
        ConfigError: a missing column or a bad row (named by line).
    """
    header, rows = _rows(name, text)
    column = EM_COLUMNS.get(basis)
    if column is None or column not in header or EM_TIME not in header:
        raise ConfigError(f"{name}: needs columns {EM_TIME!r} and {column or basis!r}")
    ti, vi = header.index(EM_TIME), header.index(column)
    points = []
    for line, row in rows:
        try:
            points.append((datetime.fromisoformat(row[ti]).replace(tzinfo=UTC), float(row[vi])))
        except (ValueError, IndexError) as e:
            raise ConfigError(f"{name} line {line}: {e}") from e
    return HourlySeries.from_points(name, points)


def read_price_csv(text: str, time_basis: tzinfo, name: str = "price") -> tuple[HourlySeries, str]:
    """Price per MWh by UTC hour and the currency named in the header (``Price (EUR/MWh)``).

    Args:
        text: the CSV text.
        time_basis: the zone of the naive timestamps, e.g. ``ZoneInfo("Europe/Berlin")``.
        name: for error messages.

    Raises:
        ConfigError: a header without a currency or a bad row (named by line).
    """
    header, rows = _rows(name, text)
    match = _PRICE_HEADER.match(header[1]) if len(header) == 2 else None
    if header[0] != "Datetime" or match is None:
        raise ConfigError(f"{name}: header must be 'Datetime,Price (CUR/MWh)', got {header}")
    points = []
    for line, row in rows:
        try:
            points.append((datetime.fromisoformat(row[0]).replace(tzinfo=time_basis),
                           float(row[1])))
        except (ValueError, IndexError) as e:
            raise ConfigError(f"{name} line {line}: {e}") from e
    return HourlySeries.from_points(name, points), match.group(1)


def read_open_meteo_json(text: str, name: str = "weather",
                         variable: str = "temperature_2m") -> HourlySeries:
    """An Open-Meteo hourly variable (temperature in C by default) by UTC hour; null hours are
    left out.

    Raises:
        ConfigError: not Open-Meteo JSON, or a bad time (named by its index).
    """
    try:
        data = json.loads(text)
        offset = timezone(timedelta(seconds=int(data["utc_offset_seconds"])))
        times, values = data["hourly"]["time"], data["hourly"][variable]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{name}: not an Open-Meteo hourly file with {variable!r}: {e}") from e
    points = []
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if v is None:
            continue
        try:
            points.append((datetime.fromisoformat(t).replace(tzinfo=offset), float(v)))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{name}: hourly.time[{i}]: {e}") from e
    return HourlySeries.from_points(name, points)


class ElectricityMapsFolder:
    """A :class:`~pipeline.grid.CarbonSource` over ``<ZONE>_<YEAR>_hourly.csv`` exports.

    Files are read on first use of a zone and kept. A time outside the files is an error, not
    a guess.

    Args:
        folder: directory of Electricity Maps hourly CSV exports.
        basis: ``lca`` (life-cycle, the default, as the packaged traces) or ``direct``.
    """

    def __init__(self, folder: Path, basis: str = "lca") -> None:
        self.folder, self.basis = Path(folder), basis
        self._series: dict[str, HourlySeries] = {}

    def series(self, zone: str) -> HourlySeries:
        """Every hour of every year exported for ``zone``.

        Raises:
            ConfigError: no file for the zone, or a malformed one.
        """
        if zone not in self._series:
            files = sorted(self.folder.glob(f"{zone}_*_hourly.csv"))
            if not files:
                raise ConfigError(f"no Electricity Maps file {zone}_<YEAR>_hourly.csv "
                                  f"in {self.folder}")
            values: dict[datetime, float] = {}
            for f in files:
                values |= read_electricity_maps_csv(f.read_text(encoding="utf-8"), f.name,
                                                    basis=self.basis).values
            self._series[zone] = HourlySeries(f"carbon {zone}", values)
        return self._series[zone]

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e/kWh of ``zone`` in the hour holding ``at``."""
        return self.series(zone).at(at)

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """The intensity with its signal (average, on this folder's basis)."""
        return IntensityReading(self.intensity_g_per_kwh(zone, at),
                                intensity_signal.electricitymaps_csv(self.basis))


class PriceFolder:
    """A :class:`~pipeline.grid.PriceSource` over ``<ZONE>_<YEAR>.csv`` price files.

    Args:
        folder: directory of price files (``Datetime,Price (CUR/MWh)``).
        time_basis: each zone's time zone of the naive timestamps; UTC where absent.
        currency: each zone's true currency where the header is wrong (AEMO files say USD but
            hold AUD, see ``pipeline/data/SOURCES.md``); the header's otherwise.
        usd_per: USD per unit of each currency.
    """

    def __init__(self, folder: Path, time_basis: dict[str, tzinfo] | None = None,
                 currency: dict[str, str] | None = None,
                 usd_per: dict[str, float] | None = None) -> None:
        from pipeline.grid import USD_PER_CURRENCY

        self.folder = Path(folder)
        self._basis, self._currency = time_basis or {}, currency or {}
        self._usd_per = usd_per or dict(USD_PER_CURRENCY)
        self._series: dict[str, HourlySeries | None] = {}

    def series(self, zone: str) -> HourlySeries | None:
        """USD/kWh by hour of ``zone``, or None without a file for it.

        Raises:
            ConfigError: a malformed file, or a currency without a USD rate.
        """
        if zone not in self._series:
            self._series[zone] = self._load(zone)
        return self._series[zone]

    def _load(self, zone: str) -> HourlySeries | None:
        files = sorted(self.folder.glob(f"{zone}_*.csv"))
        if not files:
            return None
        values: dict[datetime, float] = {}
        for f in files:
            per_mwh, header_currency = read_price_csv(
                f.read_text(encoding="utf-8"), self._basis.get(zone, UTC), f.name)
            currency = self._currency.get(zone, header_currency)
            if currency not in self._usd_per:
                raise ConfigError(f"{f.name}: no USD rate for {currency}")
            usd_per_kwh = self._usd_per[currency] / 1000.0
            values |= {h: v * usd_per_kwh for h, v in per_mwh.values.items()}
        return HourlySeries(f"price {zone}", values)

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """USD/kWh of ``zone`` in the hour holding ``at``; None where it has no price file."""
        series = self.series(zone)
        return None if series is None else series.at(at)


class WeatherFolder:
    """A :class:`~pipeline.grid.TemperatureSource` over ``<ZONE>_<YEAR>.json`` Open-Meteo files."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._series: dict[str, HourlySeries] = {}

    def temperature_c(self, zone: str, at: datetime) -> float:
        """Degrees C at ``zone``'s site in the hour holding ``at``.

        Raises:
            ConfigError: no file for the zone, a malformed one, or an hour outside it.
        """
        if zone not in self._series:
            files = sorted(self.folder.glob(f"{zone}_*.json"))
            if not files:
                raise ConfigError(f"no Open-Meteo file {zone}_<YEAR>.json in {self.folder}")
            values: dict[datetime, float] = {}
            for f in files:
                values |= read_open_meteo_json(f.read_text(encoding="utf-8"), f.name).values
            self._series[zone] = HourlySeries(f"temperature {zone}", values)
        return self._series[zone].at(at)
