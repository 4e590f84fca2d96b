"""Your own grid files: a folder (``ECOBATCH_GRID_DIR``) of hourly carbon, price and weather
files in their publishers' layouts, read by zone.

Naming rule: the zone is the file name up to ``_<YEAR>``: ``<ZONE>_<YEAR>[_<anything>].csv`` or
``.json``, as the Electricity Maps data portal names its exports (``SG_2024_hourly.csv``) and
as the packaged sources are named (``DE-LU_2024.csv``). What a file holds is read from its
layout, not its name:

- a CSV whose header has ``Datetime (UTC)``: an Electricity Maps hourly export; carbon, the
  life-cycle column ``Carbon Intensity gCO₂eq/kWh (LCA)`` as in the packaged traces;
- a CSV with the header ``Datetime,Price (<CUR>/MWh)``: prices; naive timestamps are in the
  market time of the packaged zone of that name (``pipeline.grid.trace.ZONE_PRICE_TIME_BASIS``) and
  in UTC for any other zone; a timestamp with its offset is taken as written;
- a JSON file: Open-Meteo hourly ``temperature_2m``.

``grid_<ZONE>.csv`` files in ecobatch's own four-column layout (``pipeline.grid.trace``) are read by a
:class:`~pipeline.grid.trace.GridTrace` over the same folder. Other files are left alone. Several
files of one zone and series (one per year) are merged.

Trace replay, as for the packaged data: an hour the files lack is read at the same UTC month,
day and hour of the latest year they hold it in, so a year of 2024 data answers for 2026. A
blank cell is a missing hour, never zero.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from pipeline.errors import ConfigError
from pipeline.grid.hourly import (
    EM_TIME,
    HourlySeries,
    Reader,
    hour_start,
    read_electricity_maps_csv,
    read_files,
    read_open_meteo_json,
    usd_price_reader,
)
from pipeline.grid.signal import electricitymaps_csv
from pipeline.grid.trace import ZONE_PRICE_TIME_BASIS

KINDS: Final = ("carbon", "price", "temperature")
_NAME = re.compile(r"^(?P<zone>[^_]+)_(?P<year>\d{4})(?:_[^.]*)?\.(?P<ext>csv|json)$")
_PRICE_HEAD = "Datetime,Price ("


class Replayed:
    """An hourly series that answers any year: an hour it lacks is read at the same UTC month,
    day and hour of the latest year that has it (trace replay).

    Args:
        series: the files' hours.
        signal: which intensity a carbon series is (:mod:`pipeline.grid.signal`).
    """

    def __init__(self, series: HourlySeries, signal: str | None = None) -> None:
        self.name = series.name
        self.signal = signal
        self._values = series.values
        self._years = sorted({h.year for h in series.values}, reverse=True)

    def get(self, at: datetime) -> float | None:
        """The value of the hour holding ``at`` (replayed), None where no year has it."""
        hour = hour_start(at)
        value = self._values.get(hour)
        for year in self._years:
            if value is not None:
                break
            try:
                value = self._values.get(hour.replace(year=year))
            except ValueError:  # Feb 29 in a year that has none
                continue
        return value


def file_kind(path: Path) -> tuple[str, str] | None:
    """``(zone, kind)`` of a file that follows the naming rule, None for any other file.

    Raises:
        ConfigError: a file named by the rule in no layout ecobatch reads (names the file).
    """
    match = _NAME.match(path.name)
    if match is None:
        return None
    zone = match["zone"]
    if match["ext"] == "json":
        return zone, "temperature"
    try:
        with path.open(encoding="utf-8-sig") as f:
            header = f.readline().strip()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    if EM_TIME in header:
        return zone, "carbon"
    if header.startswith(_PRICE_HEAD):
        return zone, "price"
    raise ConfigError(f"{path} line 1: not a layout ecobatch reads ({header[:80]!r}); expected an "
                      "Electricity Maps hourly CSV or 'Datetime,Price (CUR/MWh)'")


class GridFolder:
    """Carbon, price and temperature series by zone from a folder of publishers' files.

    The folder is listed on first use; a zone's series is read on its first use and kept.

    Args:
        folder: the folder (``ECOBATCH_GRID_DIR``).
        usd_per: USD per unit of each price currency.
    """

    def __init__(self, folder: Path, usd_per: dict[str, float]) -> None:
        self.folder = Path(folder)
        self._usd_per = usd_per
        self._files: dict[tuple[str, str], list[Path]] | None = None
        self._series: dict[tuple[str, str], Replayed] = {}

    def files(self) -> dict[tuple[str, str], list[Path]]:
        """Files by ``(zone, kind)``, listed once.

        Raises:
            ConfigError: the folder is unreadable, or a file is in no known layout.
        """
        if self._files is None:
            try:
                paths = sorted(p for p in self.folder.iterdir() if p.is_file())
            except OSError as e:
                raise ConfigError(f"ECOBATCH_GRID_DIR {self.folder}: {e}") from e
            found: dict[tuple[str, str], list[Path]] = {}
            for path in paths:
                key = file_kind(path)
                if key is not None:
                    found.setdefault(key, []).append(path)
            self._files = found
        return self._files

    def zones(self, kind: str) -> set[str]:
        """Zones with files of ``kind`` (carbon, price or temperature)."""
        return {zone for zone, k in self.files() if k == kind}

    def series(self, zone: str, kind: str) -> Replayed | None:
        """``zone``'s series of ``kind``, None without a file for it.

        Raises:
            ConfigError: a file is unreadable or malformed (the message names it and the line).
        """
        key = (zone, kind)
        if key not in self._series:
            paths = self.files().get(key)
            if not paths:
                return None
            signal = electricitymaps_csv("lca") if kind == "carbon" else None
            series = read_files(paths, f"{kind} {zone}", self._reader(zone, kind))
            self._series[key] = Replayed(series, signal)
        return self._series[key]

    def _reader(self, zone: str, kind: str) -> Reader:
        if kind == "carbon":
            return read_electricity_maps_csv
        if kind == "price":
            return usd_price_reader(price_time_basis(zone), self._usd_per)
        return read_open_meteo_json


def price_time_basis(zone: str) -> ZoneInfo:
    """The time zone of naive timestamps in ``zone``'s price files: the packaged zone's market
    time, UTC for any other zone."""
    return ZoneInfo(ZONE_PRICE_TIME_BASIS.get(zone, "UTC"))
