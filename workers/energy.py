"""The energy meter protocol: what a meter returns and how a batch is wrapped in one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EnergyReading:
    """Energy used between ``start`` and ``stop`` of a meter.

    Attributes:
        energy_j: joules used by the device over the interval.
        duration_s: wall-clock length of the interval.
        source: how it was obtained, e.g. ``"nvml"``, ``"rapl"``, ``"jetson-stats"`` or
            ``"estimate:tdp*cpu-util"``.
        measured: True only when a hardware counter or sensor produced the figure.
    """

    energy_j: float
    duration_s: float
    source: str
    measured: bool

    @property
    def avg_power_w(self) -> float:
        """Mean power over the interval."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


class EnergyMeter(Protocol):
    """Measures (or, where no counter exists, estimates) the energy of an interval."""

    source: str
    measured: bool

    def start(self) -> None:
        """Begin an interval."""
        ...

    def stop(self) -> EnergyReading:
        """End the interval begun by :meth:`start` and return its energy."""
        ...
