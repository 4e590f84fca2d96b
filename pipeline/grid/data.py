"""The grid data every process reads: the packaged traces plus your own files, and the check of
a device registry against them.

:class:`GridData` answers carbon, price and temperature by zone and hour from layers, the first
that has a zone's series winning: your publishers' files in ``ECOBATCH_GRID_DIR`` (see
:mod:`pipeline.grid.files`), then ``grid_<ZONE>.csv`` files in ecobatch's layout in that folder,
then the packaged 2024 traces. So the folder adds zones and may override a packaged zone's
series one by one (your GB carbon with the packaged GB temperature, say). A zone without price
or temperature data answers None for them: missing, never zero.

:func:`checked_registry` is how every entry point loads the registry (``devices``, ``router``,
``worker``, ``run``, ``submit``, ``plan``): a device whose zone has no data is refused there,
with the device, the zone, the zones known and how to add one, instead of failing every
routing pass later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry, load_registry
from pipeline.grid import signal as intensity_signal
from pipeline.grid.files import KINDS, GridFolder
from pipeline.grid.hourly import hour_start
from pipeline.grid.signal import IntensityReading
from pipeline.grid.trace import USD_PER_CURRENCY, GridTrace, hourly_forecast, trace_hour
from pipeline.settings import Settings


class Lookup(Protocol):
    """One zone's series of one kind."""

    @property
    def name(self) -> str:
        """What the series is and where it comes from, for messages."""
        ...

    def get(self, at: datetime) -> float | None:
        """The value of the hour holding ``at``; None for a missing hour."""
        ...


class Layer(Protocol):
    """A source of series by zone and kind (carbon, price, temperature)."""

    def zones(self, kind: str) -> set[str]:
        """Zones that may have a series of ``kind``."""
        ...

    def series(self, zone: str, kind: str) -> Lookup | None:
        """``zone``'s series of ``kind``, None where it has none."""
        ...


@dataclass(frozen=True)
class _Column:
    name: str
    values: tuple[float | None, ...]
    signal: str | None = None

    def get(self, at: datetime) -> float | None:
        return self.values[trace_hour(at)]


class TraceLayer:
    """``grid_<ZONE>.csv`` files (:class:`~pipeline.grid.trace.GridTrace`) as a layer."""

    def __init__(self, trace: GridTrace, label: str, signal: str | None = None) -> None:
        self.trace, self.label, self.signal = trace, label, signal

    def zones(self, kind: str) -> set[str]:
        """Every zone with a file: the layout has all three columns."""
        return set(self.trace.zones())

    def series(self, zone: str, kind: str) -> Lookup | None:
        """The zone's column of ``kind``; None without a file or for an all-blank price column."""
        if zone not in self.trace.zones():
            return None
        t = self.trace.trace(zone)
        column = {"carbon": t.carbon_g_per_kwh, "price": t.price_usd_per_kwh,
                  "temperature": t.temperature_c}[kind]
        signal = self.signal if kind == "carbon" else None
        return None if column is None else _Column(f"{kind} {zone} ({self.label})", column, signal)


class GridData:
    """Carbon, price and temperature by zone and hour: your files over the packaged traces.

    Implements :class:`~pipeline.grid.trace.GridConditions`. Series are read on first use and kept.

    Args:
        grid_dir: your folder (``ECOBATCH_GRID_DIR``), or None for the packaged data alone.
    """

    def __init__(self, grid_dir: Path | None = None) -> None:
        self.grid_dir = grid_dir
        self._layers: list[Layer] = [TraceLayer(GridTrace(), "packaged", intensity_signal.TRACE)]
        if grid_dir is not None:
            self._layers[:0] = [GridFolder(grid_dir, dict(USD_PER_CURRENCY)),
                                TraceLayer(GridTrace(grid_dir), str(grid_dir))]
        self._chosen: dict[tuple[str, str], Lookup | None] = {}

    def zones(self, kind: str = "carbon") -> list[str]:
        """Zones with a series of ``kind`` (carbon: the zones a device can be routed in)."""
        return sorted(set().union(*(layer.zones(kind) for layer in self._layers)))

    def series(self, zone: str, kind: str) -> Lookup | None:
        """``zone``'s series of ``kind`` from the first layer that has one.

        Raises:
            ConfigError: a file is unreadable or malformed (named, with the line).
        """
        key = (zone, kind)
        if key not in self._chosen:
            found = (layer.series(zone, kind) for layer in self._layers)
            self._chosen[key] = next((s for s in found if s is not None), None)
        return self._chosen[key]

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e/kWh of ``zone`` in the hour holding ``at``.

        Raises:
            ConfigError: no carbon data for the zone (the message says how to add it), or none
                for that hour.
        """
        series = self.series(zone, "carbon")
        if series is None:
            raise ConfigError(self.unknown_zone(zone))
        value = series.get(at)
        if value is None:
            raise ConfigError(f"{series.name}: no carbon intensity for "
                              f"{hour_start(at):%Y-%m-%dT%H:00Z}")
        return value

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """The intensity with the signal of the file it came from (see
        :mod:`pipeline.grid.signal`); the signal is None for a file that does not say."""
        value = self.intensity_g_per_kwh(zone, at)
        return IntensityReading(value, getattr(self.series(zone, "carbon"), "signal", None))

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """USD/kWh of ``zone`` in the hour holding ``at``; None where unknown."""
        series = self.series(zone, "price")
        return None if series is None else series.get(at)

    def temperature_c(self, zone: str, at: datetime) -> float | None:
        """Degrees C at ``zone``'s site in the hour holding ``at``; None where unknown."""
        series = self.series(zone, "temperature")
        return None if series is None else series.get(at)

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """The data's own intensity of ``hours`` hours from the hour holding ``start``."""
        return hourly_forecast(self, zone, start, hours)

    def unknown_zone(self, zone: str) -> str:
        """Why ``zone`` cannot be routed in, and how to add it."""
        folder = f" (now {self.grid_dir})" if self.grid_dir is not None else " (unset now)"
        return (f"grid zone {zone!r} has no carbon data (zones with data: "
                f"{', '.join(self.zones()) or 'none'}); add its Electricity Maps hourly export "
                f"as {zone}_<YEAR>_hourly.csv to the folder ECOBATCH_GRID_DIR names{folder}")


LiveZones = Callable[[str], bool]
"""Whether a live carbon API answers for a zone."""


def live_carbon_zones(settings: Settings) -> LiveZones:
    """Zones the configured carbon API answers for (none with ``grid_at``, which reads files)."""
    if settings.grid_at is not None or settings.carbon_api is None:
        return lambda zone: False
    if settings.carbon_api == "watttime":
        return lambda zone: zone in settings.watttime_regions
    return lambda zone: True  # Electricity Maps covers every zone it names


def check_registry(registry: Registry, grid: GridData, live: LiveZones, where: str) -> None:
    """Refuse a device whose zone has no data; read every zone's files once, so that a malformed
    one is named now rather than in a routing pass.

    Raises:
        ConfigError: names ``where``, the device, its zone, the zones known and how to add one.
    """
    for device in registry.devices:
        problem = _zone_problem(device, grid, live)
        if problem is not None:
            raise ConfigError(f"{where}: device {device.name!r}: {problem}")
    for zone in sorted({d.zone for d in registry.devices if d.zone is not None}):
        for kind in KINDS:
            try:
                grid.series(zone, kind)
            except ConfigError as e:
                raise ConfigError(f"{where}: grid data of zone {zone!r}: {e}") from e


def _zone_problem(device: Device, grid: GridData, live: LiveZones) -> str | None:
    zone = device.zone
    if zone is None or zone in grid.zones() or live(zone):
        return None
    if device.intensity_g_per_kwh is None:
        return grid.unknown_zone(zone) + ", or give the device a fixed intensity_g_per_kwh"
    if any(zone in grid.zones(kind) for kind in KINDS):
        return None
    return (f"grid zone {zone!r} has no price or temperature data either; leave zone out (the "
            "fixed intensity_g_per_kwh is enough) or add its files to ECOBATCH_GRID_DIR")


def offline_grid(registry: Registry, grid_dir: Path | None, where: str) -> GridData:
    """The packaged traces with ``grid_dir``'s files over them, once every device of
    ``registry`` is known to have data there (no live API: simulation and planning offline).

    Raises:
        ConfigError: a device's zone has no data; the message says how to add it.
    """
    grid = GridData(grid_dir)
    check_registry(registry, grid, lambda zone: False, where)
    return grid


def checked_registry(settings: Settings, grid: GridData | None = None) -> Registry:
    """The registry (or the detected machine), checked against the grid data.

    Raises:
        ConfigError: the registry is unreadable or invalid, or a device's zone has no data.
    """
    registry = load_registry(settings.devices)
    where = f"device registry {settings.devices}" if settings.devices else "detected device"
    check_registry(registry, grid or GridData(settings.grid_dir), live_carbon_zones(settings),
                   where)
    return registry
