"""Energy meters: NVML, RAPL and jetson-stats where a counter exists, a TDP estimate where not.

Every meter implements :class:`workers.energy.EnergyMeter`. Vendor errors are wrapped in
:class:`pipeline.errors.MeterError`. Vendor libraries are imported on first use, never at import
time, and each meter takes its vendor boundary as an argument (an NVML module, a sysfs root, a
jtop factory) so that its logic can be exercised without the hardware.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.devices import Device
from workers.energy import EnergyMeter
from workers.meters.cpu import CpuEstimateMeter
from workers.meters.jetson import JetsonMeter
from workers.meters.nvml import NvmlMeter
from workers.meters.rapl import (
    RAPL_ROOT,
    RaplDomain,
    RaplMeter,
    rapl_package_domains,
    wrapped_delta_uj,
)
from workers.meters.sampling import MeterHolder, PowerSampler, metered

__all__ = [
    "RAPL_ROOT",
    "CpuEstimateMeter",
    "JetsonMeter",
    "MeterHolder",
    "NvmlMeter",
    "PowerSampler",
    "RaplDomain",
    "RaplMeter",
    "make_meter",
    "metered",
    "rapl_package_domains",
    "wrapped_delta_uj",
]


def make_meter(device: Device, *, rapl_root: Path = RAPL_ROOT) -> EnergyMeter:
    """The best meter for ``device``: NVML, jetson-stats, RAPL, else the TDP estimate.

    Args:
        device: the device to meter.
        rapl_root: powercap sysfs directory looked at for a CPU device.

    Raises:
        MeterError: an NVIDIA or Jetson device whose counters cannot be opened here.
    """
    if device.kind == "nvidia":
        nvml_meter = NvmlMeter(device.index)
        nvml_meter.open()
        return nvml_meter
    if device.kind == "jetson":
        jetson_meter = JetsonMeter()
        jetson_meter.open()
        return jetson_meter
    if RaplMeter.available(rapl_root):
        return RaplMeter(rapl_root)
    return CpuEstimateMeter(device.tdp_w, os.cpu_count())
