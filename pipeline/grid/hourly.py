"""Readers of hourly grid and weather files in their publishers' layouts, and a carbon source
over a folder of Electricity Maps exports.

- Electricity Maps hourly CSV: ``Datetime (UTC)``, ``Carbon Intensity gCO₂eq/kWh (direct)``,
  ``Carbon Intensity gCO₂eq/kWh (LCA)``, ... (one file per zone and year,
  ``<ZONE>_<YEAR>_hourly.csv``, as the Electricity Maps data portal names them).
- Price CSV: ``Datetime,Price (<CUR>/MWh)``, naive local timestamps whose time basis the caller
  gives (market time differs by zone; see ``pipeline/data/SOURCES.md``), or timestamps with
  their UTC offset (``2024-10-27T02:00:00+02:00``), which are taken as written. Daylight saving
  in local timestamps is read as :func:`localize` says.
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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final

from pipeline.errors import ConfigError
from pipeline.grid import signal as intensity_signal
from pipeline.grid.signal import IntensityReading

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
    """gCO2e/kWh by hour from an Electricity Maps hourly CSV (``basis`` ``lca`` or ``direct``);
    a blank intensity is a missing hour.

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
            if row[vi].strip():  # a blank cell is a missing hour
                points.append((datetime.fromisoformat(row[ti]).replace(tzinfo=UTC), float(row[vi])))
        except (ValueError, IndexError) as e:
            raise ConfigError(f"{name} line {line}: {e}") from e
    return HourlySeries.from_points(name, points)


def read_price_csv(text: str, time_basis: tzinfo, name: str = "price") -> tuple[HourlySeries, str]:
    """Price per MWh by UTC hour and the currency named in the header (``Price (EUR/MWh)``);
    a blank price is a missing hour.

    Args:
        text: the CSV text.
        time_basis: the zone of the naive timestamps, e.g. ``ZoneInfo("Europe/Berlin")``;
            daylight saving is read as :func:`localize` says.
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
            if row[1].strip():  # a blank cell is a missing hour
                points.append((datetime.fromisoformat(row[0]), float(row[1])))
        except (ValueError, IndexError) as e:
            raise ConfigError(f"{name} line {line}: {e}") from e
    return HourlySeries.from_points(name, localize(points, time_basis)), match.group(1)


def localize(points: Sequence[tuple[datetime, float]],
             zone: tzinfo) -> list[tuple[datetime, float]]:
    """Points at naive local times of ``zone``, in file order, as timezone-aware points.

    A time that carries its own offset is kept as written. Daylight saving, in every zone:

    - a local time that does not exist (the hour skipped when clocks go forward) names no
      instant; publishers fill it with a placeholder row, which is left out;
    - a local time that happens twice (clocks go back) is the first, summer-time hour on its
      first row and the second, standard-time hour on the next row with the same time; a file
      that gives such a time only once (a publisher that dropped or merged the repeat) gives
      its value to both hours, so no UTC hour is left without one.
    """
    repeats = Counter(t for t, _ in points if _dst_kind(t, zone) == "repeat")
    seen: Counter[datetime] = Counter()
    out: list[tuple[datetime, float]] = []
    for t, v in points:
        kind = _dst_kind(t, zone)
        if kind == "gap":
            continue
        if kind == "repeat" and repeats[t] == 1:
            out += [(t.replace(tzinfo=zone), v), (t.replace(tzinfo=zone, fold=1), v)]
        elif kind == "repeat":
            out.append((t.replace(tzinfo=zone, fold=min(seen[t], 1)), v))
            seen[t] += 1
        else:
            out.append((t if t.tzinfo is not None else t.replace(tzinfo=zone), v))
    return out


def _dst_kind(t: datetime, zone: tzinfo) -> str:
    """``"gap"`` (no such local time), ``"repeat"`` (it happens twice) or ``"plain"``."""
    if t.tzinfo is not None:
        return "plain"
    first, second = t.replace(tzinfo=zone), t.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return "plain"
    wall = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return "repeat" if wall == t else "gap"


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


Reader = Callable[[str, str], HourlySeries]
"""Reads one file's text (and its name, for errors) into an hourly series."""


def read_files(paths: Sequence[Path], name: str, read: Reader) -> HourlySeries:
    """One series from several files (one a year, say); a later file wins a shared hour.

    Raises:
        ConfigError: a file is unreadable or malformed (the message names it).
    """
    values: dict[datetime, float] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        values |= read(text, str(path)).values
    return HourlySeries(name, values)


def usd_price_reader(time_basis: tzinfo, usd_per: Mapping[str, float],
                     currency: str | None = None) -> Reader:
    """A :data:`Reader` of price CSVs giving USD/kWh.

    Args:
        time_basis: the zone of the naive timestamps.
        usd_per: USD per unit of each currency.
        currency: the true currency where the header is wrong (AEMO files say USD but hold AUD,
            see ``pipeline/data/SOURCES.md``); None takes the header's.
    """

    def read(text: str, name: str) -> HourlySeries:
        per_mwh, header_currency = read_price_csv(text, time_basis, name)
        unit = currency or header_currency
        if unit not in usd_per:
            raise ConfigError(f"{name}: no USD rate for {unit}")
        usd_per_kwh = usd_per[unit] / 1000.0
        return HourlySeries(name, {h: v * usd_per_kwh for h, v in per_mwh.values.items()})

    return read


class ElectricityMapsFolder:
    """A :class:`~pipeline.grid.trace.CarbonSource` over ``<ZONE>_<YEAR>_hourly.csv`` exports.

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
            self._series[zone] = read_files(files, f"carbon {zone}", self._read)
        return self._series[zone]

    def _read(self, text: str, name: str) -> HourlySeries:
        return read_electricity_maps_csv(text, name, basis=self.basis)

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e/kWh of ``zone`` in the hour holding ``at``."""
        return self.series(zone).at(at)

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """The intensity with its signal (average, on this folder's basis)."""
        return IntensityReading(self.intensity_g_per_kwh(zone, at),
                                intensity_signal.electricitymaps_csv(self.basis))


class PriceFolder:
    """A :class:`~pipeline.grid.trace.PriceSource` over ``<ZONE>_<YEAR>.csv`` price files.

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
        from pipeline.grid.trace import USD_PER_CURRENCY

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
            files = sorted(self.folder.glob(f"{zone}_*.csv"))
            reader = usd_price_reader(self._basis.get(zone, UTC), self._usd_per,
                                      self._currency.get(zone))
            self._series[zone] = read_files(files, f"price {zone}", reader) if files else None
        return self._series[zone]

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """USD/kWh of ``zone`` in the hour holding ``at``; None where it has no price file."""
        series = self.series(zone)
        return None if series is None else series.at(at)


class WeatherFolder:
    """A :class:`~pipeline.grid.trace.TemperatureSource` over ``<ZONE>_<YEAR>.json`` Open-Meteo files."""

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
            self._series[zone] = read_files(files, f"temperature {zone}", read_open_meteo_json)
        return self._series[zone].at(at)
