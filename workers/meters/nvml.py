"""NVIDIA GPU energy from NVML: the total-energy counter, else integrated power samples.

The counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded)
exists on Volta and newer. It restarts from zero when the driver reloads (a GPU reset, a
driver upgrade under a long-lived worker); the meter polls it and takes a decrease as a reset,
counting the new value as the energy since the reset. The driver refreshes the counter only
every few tens of milliseconds (about 100 ms on recent data-centre GPUs, see Yang, Adamek and
Armour, "Accurate and Convenient Energy Measurements for GPUs", SC 2024), so a window shorter
than ``min_window_s`` is flagged ``short-window``, and one in which the counter did not move at
all ``no-counter-update``: such a figure is not to be trusted alone.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from pipeline.errors import MeterError
from workers.meters.base import EnergyReading
from workers.meters.sampling import CounterPoller, PowerSampler

_NVML_UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")
NVML_ARCH_VOLTA = 5  # pynvml.NVML_DEVICE_ARCH_VOLTA; the first with the energy counter
NVML_ARCH_UNKNOWN = 0xFFFFFFFF


class NvmlMeter:
    """NVIDIA GPU energy from NVML.

    Uses the total-energy counter on Volta and newer. On older GPUs (or wherever the counter
    is not supported) it samples ``nvmlDeviceGetPowerUsage`` (milliwatts) in a thread and
    integrates it; ``source`` then reads ``"nvml-power-sampled"``. Both measure the whole GPU.

    Args:
        index: GPU index (NVML's, which ignores ``CUDA_VISIBLE_DEVICES``).
        uuid: the GPU's UUID; when given, the GPU is looked up by it and ``index`` is unused.
        nvml: the ``pynvml`` module (nvidia-ml-py) or an object with the same functions;
            imported on first use by default.
        sample_interval_s: power sampling period of the fallback.
        poll_interval_s: how often the counter is read to catch a reset.
        min_window_s: windows shorter than this are flagged ``short-window``.
    """

    measured = True

    def __init__(self, index: int = 0, *, uuid: str | None = None, nvml: Any | None = None,
                 sample_interval_s: float = 0.05, poll_interval_s: float = 1.0,
                 min_window_s: float = 0.1) -> None:
        self.index = index
        self.uuid = uuid
        self.gpu = uuid if uuid is not None else str(index)
        self.source = "nvml"
        self.min_window_s = min_window_s
        self._nvml = nvml
        self._handle: Any = None
        self._sampler: PowerSampler | None = None
        self._poller = CounterPoller(self._read_counter, self._counter_delta, poll_interval_s,
                                     "nvml-poll")
        self._sample_interval_s = sample_interval_s
        self._resets = 0
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
            handle = (nvml.nvmlDeviceGetHandleByIndex(self.index) if self.uuid is None
                      else nvml.nvmlDeviceGetHandleByUUID(self.uuid))
        except nvml.NVMLError as e:
            raise MeterError(f"NVML GPU {self.gpu}: {e}") from e
        if not self._has_counter(nvml, handle):
            self.source = "nvml-power-sampled"
            self._sampler = PowerSampler(lambda: self._power_w(nvml, handle),
                                         self._sample_interval_s)
        self._handle = handle

    def start(self) -> None:
        """Begin an interval."""
        self.open()
        self._resets = 0
        self._t0 = time.monotonic()
        if self._sampler is not None:
            self._sampler.start()
        else:
            self._poller.start()

    def stop(self) -> EnergyReading:
        """End the interval and return the GPU's energy over it, with its caveats."""
        sampler = self._sampler
        energy_j = sampler.stop() if sampler is not None else self._poller.stop()[0] / 1000.0
        duration_s = time.monotonic() - self._t0
        notes = []
        if duration_s < self.min_window_s:
            notes.append("short-window")
        if self._sampler is None and energy_j == 0.0:
            notes.append("no-counter-update")
        if self._resets:
            notes.append("counter-reset")
        return EnergyReading(energy_j, duration_s, self.source, True, notes=tuple(notes))

    def _has_counter(self, nvml: Any, handle: Any) -> bool:
        try:
            arch = int(nvml.nvmlDeviceGetArchitecture(handle))
        except (AttributeError, nvml.NVMLError):
            arch = NVML_ARCH_UNKNOWN  # old driver: let the counter call decide
        if arch < NVML_ARCH_VOLTA:
            return False
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nvml.NVMLError as e:
            if not self._unsupported(nvml, e):
                raise MeterError(f"NVML energy counter of GPU {self.gpu}: {e}") from e
            return False
        return True

    def _nvml_module(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as e:
                raise MeterError("NVML needs nvidia-ml-py (import pynvml)") from e
        return self._nvml

    def _read_counter(self) -> list[int]:
        nvml = self._nvml_module()
        try:
            return [int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))]
        except nvml.NVMLError as e:
            raise MeterError(f"NVML energy counter of GPU {self.gpu}: {e}") from e

    def _counter_delta(self, _i: int, before_mj: int, after_mj: int) -> int:
        if after_mj >= before_mj:
            return after_mj - before_mj
        # The counter restarted from zero: what it reads now was used since the reset; the
        # energy between the last read and the reset (at most one poll interval) is lost.
        self._resets += 1
        return after_mj

    @staticmethod
    def _power_w(nvml: Any, handle: Any) -> float:
        return float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0

    @staticmethod
    def _unsupported(nvml: Any, err: Exception) -> bool:
        codes = {getattr(nvml, name, None) for name in _NVML_UNSUPPORTED} - {None}
        return getattr(err, "value", None) in codes
