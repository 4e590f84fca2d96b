"""The fallback where no counter exists: an estimate from TDP and CPU utilisation."""

from __future__ import annotations

import os
import time

import psutil

from pipeline.errors import MeterError
from workers.meters.base import EnergyReading


class CpuEstimateMeter:
    """An estimate, not a measurement: TDP x this process's CPU utilisation over the interval.

    ``energy_j = tdp_w x cpu_time_s / n_cores`` where ``cpu_time_s`` is the user + system time
    of this process (all its threads) and of its waited-for children over the interval; that is
    TDP x average utilisation x wall time. It ignores idle power, memory and other processes, so
    it is a rough figure; ``measured`` is False and every row says so.

    Args:
        tdp_w: thermal design power of the whole CPU, watts.
        n_cores: logical cores ``tdp_w`` is spread over; ``os.cpu_count()`` by default.
        tdp_origin: where ``tdp_w`` came from (``registry``, ``table:<model>``, ``nominal``);
            kept in each reading's ``notes``.
    """

    source = "estimate:tdp*cpu-util"
    measured = False

    def __init__(self, tdp_w: float, n_cores: int | None = None, *,
                 tdp_origin: str = "registry") -> None:
        if tdp_w <= 0:
            raise MeterError(f"TDP must be > 0 W, got {tdp_w}")
        self.tdp_w = tdp_w
        self.n_cores = n_cores or os.cpu_count() or 1
        self.tdp_origin = tdp_origin
        self._process = psutil.Process()
        self._cpu0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        """Begin an interval."""
        self._cpu0 = self._cpu_s()
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        """End the interval and return the estimated CPU energy over it."""
        cpu_s = max(0.0, self._cpu_s() - self._cpu0)
        duration_s = time.monotonic() - self._t0
        return EnergyReading(self.tdp_w * cpu_s / self.n_cores, duration_s, self.source, False,
                             notes=(f"tdp:{self.tdp_origin}",))

    def _cpu_s(self) -> float:
        t = self._process.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
