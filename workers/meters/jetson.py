"""Jetson board energy from jetson-stats (jtop) power readings, sampled and integrated."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import MeterError
from workers.energy import EnergyReading
from workers.meters.sampling import PowerSampler


class JetsonMeter:
    """Jetson board power from jetson-stats (``jtop``), sampled in a thread and integrated.

    Reads the total of the board's power rails (``jetson.power["tot"]["power"]``, milliwatts),
    so it measures the module (CPU, GPU, memory, SoC), not only the GPU. jetson-stats is an
    optional extra (``pip install ecobatch[jetson]``) and needs its ``jtop`` service running.

    Args:
        jtop_factory: builds the jtop client; ``jtop.jtop(interval=...)`` by default.
        sample_interval_s: power sampling period; jtop itself refreshes every ``interval``.
    """

    source = "jetson-stats"
    measured = True

    def __init__(self, jtop_factory: Callable[[], Any] | None = None,
                 sample_interval_s: float = 0.5) -> None:
        self._factory = jtop_factory
        self._interval_s = sample_interval_s
        self._jetson: Any = None
        self._sampler = PowerSampler(self._power_w, sample_interval_s)
        self._t0 = 0.0

    def open(self) -> None:
        """Connect to the jtop service; idempotent.

        Raises:
            MeterError: jetson-stats is not installed or its service is not reachable.
        """
        if self._jetson is not None:
            return
        try:
            jetson = self._make_client()
            jetson.start()
        except MeterError:
            raise
        except Exception as e:  # jtop raises its own JtopException and OSErrors
            raise MeterError(f"jetson-stats: {e}") from e
        self._jetson = jetson

    def close(self) -> None:
        """Disconnect from the jtop service."""
        if self._jetson is not None:
            self._jetson.close()
            self._jetson = None

    def start(self) -> None:
        """Begin an interval."""
        self.open()
        self._t0 = time.monotonic()
        self._sampler.start()

    def stop(self) -> EnergyReading:
        """End the interval and return the board's energy over it."""
        energy_j = self._sampler.stop()
        return EnergyReading(energy_j, time.monotonic() - self._t0, self.source, True)

    def _make_client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        try:
            jtop_module = importlib.import_module("jtop")
        except ImportError as e:
            raise MeterError("Jetson metering needs jetson-stats: "
                             "pip install ecobatch[jetson]") from e
        return jtop_module.jtop(interval=self._interval_s)

    def _power_w(self) -> float:
        try:
            return float(self._jetson.power["tot"]["power"]) / 1000.0
        except (KeyError, TypeError, AttributeError) as e:
            raise MeterError(f"jetson-stats gave no total power: {e}") from e
