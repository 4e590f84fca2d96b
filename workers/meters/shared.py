"""One meter on a device that several batches use at once: each interval split by work.

With continuous batching a device decodes sequences of several batches in the same steps, so
no interval of the meter belongs to one batch. :class:`SharedMeter` runs the device's meter in
back-to-back intervals, cut whenever the caller asks (a batch finished, the device went idle).
Each interval's joules (device and host), and its seconds, are split among the sequences that
did work in it, in proportion to that work (tokens fed to the model for each), exactly
(:func:`~pipeline.accounting.account.apportion`). A batch's reading is the sum of its
sequences' shares, so every batch's energy is its own and all of them together add up to what
the meter read.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.accounting.account import apportion
from workers.meters.base import EnergyMeter, EnergyReading

K = TypeVar("K", bound=Hashable)


@dataclass
class Share:
    """What one sequence has been apportioned so far, and how those readings were taken."""

    energy_j: float = 0.0
    host_energy_j: float = 0.0
    busy_s: float = 0.0
    source: str = ""
    measured: bool = True
    notes: set[str] = field(default_factory=set)
    host_source: str | None = None
    host_measured: bool = True

    def add(self, reading: EnergyReading, energy_j: float, host_energy_j: float,
            busy_s: float) -> None:
        """Add a part of ``reading``: its joules, host joules and seconds, and its kind."""
        self.energy_j += energy_j
        self.host_energy_j += host_energy_j
        self.busy_s += busy_s
        self.source = reading.source
        self.measured = self.measured and reading.measured
        self.notes.update(reading.notes)
        if reading.host is not None:
            self.host_source = reading.host.source
            self.host_measured = self.host_measured and reading.host.measured


class SharedMeter:
    """A device's meter shared by the sequences decoding on it (see the module docstring).

    One thread (the device's decoding engine) calls every method.
    """

    def __init__(self, meter: EnergyMeter):
        self._meter = meter
        self._running = False
        self.total_j = 0.0
        """Joules the meter read over every interval so far (device plus host)."""

    def ensure_started(self) -> None:
        """Begin an interval unless one is open."""
        if not self._running:
            self._meter.start()
            self._running = True

    def cut(self, work: Mapping[K, float], shares: dict[K, Share]) -> None:
        """End the open interval and add each key's part of it to ``shares``.

        Args:
            work: work done in the interval by each key (sequence); keys with none may be left
                out. An interval nobody worked in is read and dropped.
            shares: running totals, updated in place.
        """
        if not self._running:
            return
        reading = self._meter.stop()
        self._running = False
        self.total_j += reading.total_energy_j
        keys = list(work)
        if not keys:
            return
        weights = [float(work[k]) for k in keys]
        host_j = reading.host.energy_j if reading.host is not None else 0.0
        for key, e, h, s in zip(keys, apportion(reading.energy_j, weights),
                                apportion(host_j, weights),
                                apportion(reading.duration_s, weights), strict=True):
            shares.setdefault(key, Share()).add(reading, e, h, s)

    def reading_of(self, shares: list[Share]) -> EnergyReading:
        """One reading for a batch made of ``shares``: its joules, host joules and busy seconds
        are their sums; it is measured only if every part was."""
        busy_s = math.fsum(s.busy_s for s in shares)
        notes = sorted(set().union(*(s.notes for s in shares))) if shares else []
        host_sources = {s.host_source for s in shares if s.host_source is not None}
        host = None
        if host_sources:
            host = EnergyReading(energy_j=math.fsum(s.host_energy_j for s in shares),
                                 duration_s=busy_s, source=",".join(sorted(host_sources)),
                                 measured=all(s.host_measured for s in shares))
        source = ",".join(sorted({s.source for s in shares if s.source})) or self._meter.source
        return EnergyReading(energy_j=math.fsum(s.energy_j for s in shares), duration_s=busy_s,
                             source=source,
                             measured=bool(shares) and all(s.measured for s in shares),
                             notes=("shared-interval", *notes), host=host)
