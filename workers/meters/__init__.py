"""Energy meters: NVML, RAPL and jetson-stats where a counter exists, a TDP estimate where not.

Every meter implements :class:`workers.meters.base.EnergyMeter`. Vendor errors are wrapped in
:class:`pipeline.errors.MeterError`. Vendor libraries are imported on first use, never at import
time, and each meter takes its vendor boundary as an argument (an NVML module, a sysfs root, a
jtop factory) so that its logic can be exercised without the hardware.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.fleet.devices import Device
from workers.meters.base import EnergyMeter
from workers.meters.cpu import CpuEstimateMeter
from workers.meters.cpu_tdp import local_cpu_name
from workers.meters.host import HostShareMeter, cpu_tdp_w, host_meter_for
from workers.meters.jetson import JetsonMeter
from workers.meters.nvml import NvmlMeter
from workers.meters.rapl import (
    RAPL_ROOT,
    RaplDomain,
    RaplMeter,
    rapl_domains,
    rapl_package_domains,
    wrapped_delta_uj,
)
from workers.meters.sampling import (
    CounterPoller,
    MeterHolder,
    PowerSampler,
    integrate_power_j,
    metered,
)

__all__ = [
    "RAPL_ROOT",
    "CounterPoller",
    "CpuEstimateMeter",
    "HostShareMeter",
    "JetsonMeter",
    "MeterHolder",
    "NvmlMeter",
    "PowerSampler",
    "RaplDomain",
    "RaplMeter",
    "cpu_tdp_w",
    "host_meter_for",
    "integrate_power_j",
    "make_meter",
    "metered",
    "rapl_domains",
    "rapl_package_domains",
    "wrapped_delta_uj",
]


def make_meter(device: Device, *, rapl_root: Path = RAPL_ROOT) -> EnergyMeter:
    """The best meter for ``device``: NVML, jetson-stats, RAPL, else the TDP estimate.

    An NVIDIA device's meter also meters the host's share (RAPL, else estimated) unless its
    ``host_share`` is 0; a Jetson's board power already holds its CPU, so it has none.

    Args:
        device: the device to meter.
        rapl_root: powercap sysfs directory looked at for a CPU device or a GPU's host.

    Raises:
        MeterError: an NVIDIA or Jetson device whose counters cannot be opened here.
    """
    if device.kind == "nvidia":
        nvml_meter = NvmlMeter(device.index, uuid=device.uuid)
        nvml_meter.open()
        if device.host_share == 0:
            return nvml_meter
        host, share = host_meter_for(device, rapl_root)
        return HostShareMeter(nvml_meter, host, share)
    if device.kind == "jetson":
        jetson_meter = JetsonMeter()
        jetson_meter.open()
        return jetson_meter
    if RaplMeter.available(rapl_root):
        return RaplMeter(rapl_root)
    explicit = device.tdp_w if "tdp_w" in device.model_fields_set else None
    tdp_w, origin = cpu_tdp_w(explicit, local_cpu_name(), device.tdp_w)
    return CpuEstimateMeter(tdp_w, os.cpu_count(), tdp_origin=origin)
