"""Grid data frozen at one chosen hour, for demonstrations and reproducible runs.

With ``ECOBATCH_GRID_AT`` set, every process (router, planner, workers) reads the grid as it
was at that hour, whatever the wall clock says, so a run can be repeated against, say, the GB
and AU-NSW traces at 2024-06-01T12:00Z. The forecast runs on from that hour.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pipeline.grid.signal import IntensityReading, read_intensity
from pipeline.grid.trace import GridConditions


class HourlyGrid(GridConditions, Protocol):
    """Grid conditions that can also list a zone's intensity hour by hour."""

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """(start of hour UTC, gCO2e/kWh) for ``hours`` hours from the hour holding ``start``."""
        ...


class PinnedGrid:
    """Grid data (:class:`~pipeline.grid.data.GridData`, a ``GridTrace``) whose clock is
    stopped at ``at``."""

    def __init__(self, trace: HourlyGrid, at: datetime) -> None:
        self.trace = trace
        self.at = at

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """Intensity of ``zone`` at the pinned hour (``at`` is ignored)."""
        return self.trace.intensity_g_per_kwh(zone, self.at)

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """Intensity and signal of ``zone`` at the pinned hour (``at`` is ignored)."""
        return read_intensity(self.trace, zone, self.at)

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """Price of ``zone`` at the pinned hour (``at`` is ignored)."""
        return self.trace.price_usd_per_kwh(zone, self.at)

    def temperature_c(self, zone: str, at: datetime) -> float | None:
        """Temperature at ``zone``'s site at the pinned hour (``at`` is ignored)."""
        return self.trace.temperature_c(zone, self.at)

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """The trace from the pinned hour on, stamped from ``start``'s hour."""
        pinned = self.trace.forecast(zone, self.at, hours)
        real = self.trace.forecast(zone, start, hours)
        return [(t, g) for (t, _), (_, g) in zip(real, pinned, strict=True)]
