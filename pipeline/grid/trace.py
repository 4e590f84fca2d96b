"""Grid and site conditions by zone and hour: carbon intensity, electricity price, temperature.

The packaged data (``pipeline/data/grid_<ZONE>.csv``, built by ``scripts/build_grid_data.py``;
sources and licences in ``pipeline/data/SOURCES.md``) holds one row per UTC hour of 2024.

Trace replay: the traces cover 2024 only, so a time in any other year reads the row of the same
UTC month, day and hour of 2024 (2024 is a leap year, so every date, Feb 29 included, has a row;
non-leap years simply never read Feb 29). Times are converted to UTC before the lookup.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from itertools import accumulate
from typing import Final, Protocol

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.grid import signal as intensity_signal
from pipeline.grid.signal import IntensityReading

TRACE_YEAR: Final = 2024
HOURS_IN_TRACE: Final = 8784  # 366 days x 24 h
_DAYS_IN_MONTH_2024 = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_START_DAY: Final = (0, *accumulate(_DAYS_IN_MONTH_2024[:-1]))
_COLUMNS: Final = ["hour_utc", "carbon_g_per_kwh", "price_per_mwh", "temperature_c"]

# Fixed conversion rates to USD, approximately the 2024 annual averages of the ECB (EUR) and
# RBA (AUD) reference rates. Fixed on purpose: the same trace hour always costs the same.
USD_PER_CURRENCY: Final[dict[str, float]] = {"USD": 1.0, "EUR": 1.08, "AUD": 0.66}

# Currency of each zone's ``price_per_mwh`` column (see SOURCES.md; AEMO prices are AUD even
# though the upstream file header says USD). Zones absent here have no price data.
ZONE_PRICE_CURRENCY: Final[dict[str, str]] = {
    "AU-NSW": "AUD",
    "AU-VIC": "AUD",
    "DE-LU": "EUR",
    "US-CAL-CISO": "USD",
}

# The time basis of the naive timestamps in each packaged zone's price source (IANA names; see
# SOURCES.md). A price file of your own for one of these zones is read in the same basis; any
# other zone's naive timestamps are read as UTC (write them with their offset to say otherwise).
ZONE_PRICE_TIME_BASIS: Final[dict[str, str]] = {
    "AU-NSW": "Etc/GMT-10",  # AEMO NEM time: UTC+10 all year (the POSIX sign is inverted)
    "AU-VIC": "Etc/GMT-10",
    "DE-LU": "Europe/Berlin",
    "US-CAL-CISO": "UTC",
}


class CarbonSource(Protocol):
    """Grid carbon intensity of a zone at an hour."""

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e per kWh in ``zone`` at ``at`` (timezone-aware UTC)."""
        ...


class PriceSource(Protocol):
    """Wholesale electricity price of a zone at an hour."""

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """USD per kWh in ``zone`` at ``at``; None where the zone has no price data (then the
        cost is unknown, never zero)."""
        ...


class TemperatureSource(Protocol):
    """Ambient air temperature at a zone's site at an hour."""

    def temperature_c(self, zone: str, at: datetime) -> float | None:
        """Degrees Celsius in ``zone`` at ``at`` (timezone-aware UTC); None where the zone has
        no temperature data for that hour (then the site's fixed PUE and WUE apply)."""
        ...


class GridConditions(CarbonSource, PriceSource, TemperatureSource, Protocol):
    """Carbon, price and temperature together: what the accounting of a batch needs."""


def trace_hour(at: datetime) -> int:
    """Index of the 2024 trace hour that replays ``at`` (same UTC month, day and hour).

    Raises:
        ValueError: ``at`` is naive; every time in ecobatch is timezone-aware.
    """
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass a timezone-aware UTC time")
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return (_MONTH_START_DAY[at.month - 1] + at.day - 1) * 24 + at.hour


@dataclass(frozen=True)
class ZoneTrace:
    """One zone's hourly series, indexed by :func:`trace_hour`; None marks a missing hour.

    Attributes:
        zone: grid zone, e.g. ``"DE-LU"``.
        carbon_g_per_kwh: life-cycle (LCA) grid intensity, gCO2e/kWh.
        price_usd_per_kwh: wholesale price converted to USD/kWh, or None without price data.
        temperature_c: ambient air temperature, degrees C.
    """

    zone: str
    carbon_g_per_kwh: tuple[float | None, ...]
    price_usd_per_kwh: tuple[float | None, ...] | None
    temperature_c: tuple[float | None, ...]


def parse_zone_csv(zone: str, text: str, name: str | None = None) -> ZoneTrace:
    """Parse a ``grid_<zone>.csv`` text into a :class:`ZoneTrace`; a blank cell is a missing
    value (an hour without price or temperature), never zero.

    Args:
        zone: the zone the file is for.
        text: the CSV text.
        name: what to call the file in errors; ``grid data for <zone>`` by default.

    Raises:
        ConfigError: wrong columns, not one row per consecutive hour of 2024, or a bad number
            (the message names the file and line).
    """
    name = name or f"grid data for {zone}"
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != _COLUMNS:
        raise ConfigError(f"{name}: columns must be {_COLUMNS}")
    body = rows[1:]
    if len(body) != HOURS_IN_TRACE:
        raise ConfigError(f"{name}: {len(body)} rows, expected {HOURS_IN_TRACE} (every hour of 2024)")
    _check_hours(name, body)
    columns: tuple[list[float | None], ...] = ([], [], [])
    for line, row in enumerate(body, start=2):
        try:
            for column, cell in zip(columns, row[1:4], strict=True):
                column.append(None if not cell.strip() else float(cell))
        except ValueError as e:
            raise ConfigError(f"{name} line {line}: {e}") from e
    carbon, price, temperature = columns
    return ZoneTrace(zone, tuple(carbon), _prices_usd_per_kwh(zone, name, price), tuple(temperature))


def _check_hours(name: str, body: list[list[str]]) -> None:
    start = datetime(TRACE_YEAR, 1, 1, tzinfo=UTC)
    for i in (0, len(body) // 2, len(body) - 1):  # spot checks keep loading fast
        expected = start + timedelta(hours=i)
        try:
            got = datetime.fromisoformat(body[i][0])
        except (ValueError, IndexError) as e:
            raise ConfigError(f"{name} line {i + 2}: {e}") from e
        if got != expected or len(body[i]) != len(_COLUMNS):
            raise ConfigError(f"{name} line {i + 2}: should be {expected:%Y-%m-%dT%H:%MZ} "
                              f"and {len(_COLUMNS)} cells")


def _prices_usd_per_kwh(zone: str, name: str,
                        cells: list[float | None]) -> tuple[float | None, ...] | None:
    if all(c is None for c in cells):
        return None
    currency = ZONE_PRICE_CURRENCY.get(zone)
    if currency is None:
        raise ConfigError(f"{name}: has prices but zone {zone} has no currency in "
                          "ZONE_PRICE_CURRENCY; give them as a 'Datetime,Price (CUR/MWh)' file")
    usd_per_mwh_unit = USD_PER_CURRENCY[currency] / 1000.0  # per MWh -> per kWh
    return tuple(None if c is None else c * usd_per_mwh_unit for c in cells)


class GridTrace:
    """Carbon, price and temperature of each packaged zone, replayed from the 2024 traces.

    Implements :class:`CarbonSource`, :class:`PriceSource` and :class:`TemperatureSource`. A
    zone's file is read on its first use and kept on the instance; a lookup is then one index
    into a tuple, cheap enough for every routing pass.

    Args:
        data_dir: directory holding ``grid_<ZONE>.csv`` files; the packaged data by default.
    """

    def __init__(self, data_dir: Traversable | None = None) -> None:
        self._packaged = data_dir is None
        self._data_dir = data_dir if data_dir is not None else files("pipeline").joinpath("data")
        self._traces: dict[str, ZoneTrace] = {}
        self._known: list[str] | None = None

    def zones(self) -> list[str]:
        """Zones with a trace, sorted."""
        if self._known is None:
            names = [p.name for p in self._data_dir.iterdir()]
            self._known = sorted(
                n.removeprefix("grid_").removesuffix(".csv")
                for n in names
                if n.startswith("grid_") and n.endswith(".csv")
            )
        return list(self._known)

    def trace(self, zone: str) -> ZoneTrace:
        """The whole hourly trace of ``zone``, loaded on first use.

        Raises:
            ConfigError: the zone has no packaged data (the message lists the known zones), or
                its file is unreadable or malformed (the message names the file and line).
        """
        cached = self._traces.get(zone)
        if cached is not None:
            return cached
        if zone not in self.zones():
            known = ", ".join(self.zones()) or "none"
            raise ConfigError(f"unknown grid zone {zone!r} (known: {known})")
        path = self._data_dir.joinpath(f"grid_{zone}.csv")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"grid data for {zone}: cannot read {path}: {e}") from e
        trace = parse_zone_csv(zone, text, None if self._packaged else str(path))
        self._traces[zone] = trace
        return trace

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """Life-cycle grid intensity (gCO2e/kWh) of ``zone`` at the hour of ``at``.

        Raises:
            ConfigError: unknown zone, or the trace has no intensity for that hour.
        """
        value = self.trace(zone).carbon_g_per_kwh[trace_hour(at)]
        if value is None:
            raise ConfigError(f"grid data for {zone}: no carbon intensity for the hour of "
                              f"{at.astimezone(UTC):%Y-%m-%dT%H:00Z} (trace hour of 2024)")
        return value

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """The intensity with its signal: Electricity Maps' life-cycle average."""
        return IntensityReading(self.intensity_g_per_kwh(zone, at), intensity_signal.TRACE)

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """Wholesale price (USD/kWh) of ``zone`` at the hour of ``at``; None without price data
        or for an hour whose price is missing."""
        prices = self.trace(zone).price_usd_per_kwh
        return None if prices is None else prices[trace_hour(at)]

    def temperature_c(self, zone: str, at: datetime) -> float | None:
        """Ambient temperature (degrees C) at ``zone``'s site at the hour of ``at``; None for
        a missing hour."""
        return self.trace(zone).temperature_c[trace_hour(at)]

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """Intensity of ``hours`` consecutive hours from the hour containing ``start``.

        The "forecast" is the replayed trace itself, i.e. a perfect forecast; a planner using
        it sees the hours it will later be accounted at. For an honest offline forecast that
        uses only the past, see :func:`pipeline.grid.forecast.same_hour_forecast`.

        Returns:
            (start of the hour in UTC, gCO2e/kWh) pairs, in time order.

        Raises:
            ValueError: ``hours`` is negative or ``start`` is naive.
            ConfigError: unknown zone, or an hour without intensity.
        """
        return hourly_forecast(self, zone, start, hours)


def hourly_forecast(source: CarbonSource, zone: str, start: datetime,
                    hours: int) -> list[tuple[datetime, float]]:
    """``source``'s intensity of ``hours`` consecutive hours from the hour holding ``start``.

    Raises:
        ValueError: ``hours`` is negative or ``start`` is naive.
    """
    if hours < 0:
        raise ValueError(f"hours must be >= 0, got {hours}")
    trace_hour(start)  # rejects a naive start before astimezone() guesses a local zone
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    steps = (first + timedelta(hours=k) for k in range(hours))
    return [(h, source.intensity_g_per_kwh(zone, h)) for h in steps]


@dataclass(frozen=True, slots=True)
class Conditions:
    """A device's grid conditions at an hour: what routing prices a batch at and what the
    worker accounts it at, from the one function :func:`device_conditions`.

    Attributes:
        intensity_g_per_kwh: the device's fixed intensity, else its zone's at the hour.
        price_usd_per_kwh: its zone's price; None where unknown (no zone, no price data).
        temperature_c: its zone's temperature; None where unknown (PUE and WUE are then the
            site's fixed figures).
        intensity_signal: which intensity it is (:mod:`pipeline.grid.signal`), e.g.
            ``fixed:registry``; None where the source does not say.
    """

    intensity_g_per_kwh: float
    price_usd_per_kwh: float | None = None
    temperature_c: float | None = None
    intensity_signal: str | None = None


def device_conditions(grid: GridConditions, device: Device, at: datetime) -> Conditions:
    """Intensity, price and temperature of ``device``'s site at ``at``: its fixed
    ``intensity_g_per_kwh`` where the registry sets one, else its zone's; price and temperature
    from its zone, None without a zone.

    Raises:
        ConfigError: the zone has no data (for that hour).
        DataSourceError: a live source failed with nothing to fall back on.
    """
    fixed = device.intensity_g_per_kwh
    if device.zone is None:
        if fixed is None:  # the registry refuses such a device; kept for a hand-made one
            raise ConfigError(f"device {device.name!r} has neither a zone nor a fixed intensity")
        return Conditions(fixed, intensity_signal=intensity_signal.REGISTRY_FIXED)
    reading = (IntensityReading(fixed, intensity_signal.REGISTRY_FIXED) if fixed is not None
               else intensity_signal.read_intensity(grid, device.zone, at))
    return Conditions(reading.g_per_kwh, grid.price_usd_per_kwh(device.zone, at),
                      grid.temperature_c(device.zone, at), reading.signal)
