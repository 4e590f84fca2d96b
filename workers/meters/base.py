"""The energy meter protocol: what a meter returns and how a batch is wrapped in one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
        parts_j: joules of named parts, each inside ``energy_j`` or beside it as documented by
            the meter (RAPL ``package``/``dram``, Jetson ``gpu_rail``).
        notes: caveats of this reading, e.g. ``"short-window"`` (shorter than the counter's
            update period) or ``"counter-reset"``.
        host: the host's share of the interval for a GPU device, kept apart from ``energy_j``.
    """

    energy_j: float
    duration_s: float
    source: str
    measured: bool
    parts_j: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    host: EnergyReading | None = None

    @property
    def total_energy_j(self) -> float:
        """Device plus host joules: the IT energy that carbon, water and cost are computed on."""
        return self.energy_j + (self.host.energy_j if self.host is not None else 0.0)

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
