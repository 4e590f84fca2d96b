"""NVIDIA GPU energy from NVML: the total-energy counter, else integrated power samples."""

from __future__ import annotations

import importlib
import time
from typing import Any

from pipeline.errors import MeterError
from workers.energy import EnergyReading
from workers.meters.sampling import PowerSampler

_NVML_UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")


class NvmlMeter:
    """NVIDIA GPU energy from NVML.

    Uses the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since
    the driver loaded; Volta and newer). Where the counter is not supported it samples
    ``nvmlDeviceGetPowerUsage`` (milliwatts) in a thread and integrates it; ``source`` then
    reads ``"nvml-power-sampled"``. Both are measurements of the whole GPU.

    Args:
        index: GPU index.
        nvml: the ``pynvml`` module (nvidia-ml-py) or an object with the same functions;
            imported on first use by default.
        sample_interval_s: power sampling period of the fallback.
    """

    measured = True

    def __init__(self, index: int = 0, *, nvml: Any | None = None,
                 sample_interval_s: float = 0.05) -> None:
        self.index = index
        self.source = "nvml"
        self._nvml = nvml
        self._handle: Any = None
        self._sampler: PowerSampler | None = None
        self._sample_interval_s = sample_interval_s
        self._start_mj = 0
        self._t0 = 0.0

    def open(self) -> None:
        """Initialise NVML and pick counter or power sampling; idempotent.

        Raises:
            MeterError: NVML or the GPU is unavailable.
        """
        if self._handle is not None:
            return
        nvml = self._nvml_module()
        try:
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        except nvml.NVMLError as e:
            raise MeterError(f"NVML GPU {self.index}: {e}") from e
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nvml.NVMLError as e:
            if not self._unsupported(nvml, e):
                raise MeterError(f"NVML energy counter of GPU {self.index}: {e}") from e
            self.source = "nvml-power-sampled"
            self._sampler = PowerSampler(lambda: self._power_w(nvml, handle),
                                         self._sample_interval_s)
        self._handle = handle

    def start(self) -> None:
        """Begin an interval."""
        self.open()
        self._t0 = time.monotonic()
        if self._sampler is not None:
            self._sampler.start()
        else:
            self._start_mj = self._energy_mj()

    def stop(self) -> EnergyReading:
        """End the interval and return the GPU's energy over it."""
        if self._sampler is not None:
            energy_j = self._sampler.stop()
        else:
            energy_j = (self._energy_mj() - self._start_mj) / 1000.0
        return EnergyReading(energy_j, time.monotonic() - self._t0, self.source, True)

    def _nvml_module(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as e:
                raise MeterError("NVML needs nvidia-ml-py (import pynvml)") from e
        return self._nvml

    def _energy_mj(self) -> int:
        nvml = self._nvml_module()
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except nvml.NVMLError as e:
            raise MeterError(f"NVML energy counter of GPU {self.index}: {e}") from e

    @staticmethod
    def _power_w(nvml: Any, handle: Any) -> float:
        return float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0

    @staticmethod
    def _unsupported(nvml: Any, err: Exception) -> bool:
        codes = {getattr(nvml, name, None) for name in _NVML_UNSUPPORTED} - {None}
        return getattr(err, "value", None) in codes
