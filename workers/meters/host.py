"""The host's share of a GPU batch: the CPU and memory that feed the GPU also draw power.

Measured with RAPL (package + DRAM) where the host exposes it, scaled by the device's
``host_share`` (several GPUs share one host); estimated otherwise from this worker process's
CPU time and the host CPU's TDP. The host part is kept beside the GPU's, never added into it,
so a row shows both.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pipeline.fleet.devices import Device
from workers.meters.base import EnergyMeter, EnergyReading
from workers.meters.cpu import CpuEstimateMeter
from workers.meters.cpu_tdp import CpuTdpTable, local_cpu_name
from workers.meters.rapl import RAPL_ROOT, RaplMeter

NOMINAL_W_PER_CORE = 10.0  # where the CPU is not in the TDP table (a conservative server core)


def cpu_tdp_w(explicit_w: float | None, cpu_name: str | None,
              fallback_w: float) -> tuple[float, str]:
    """TDP for an estimate and where it came from: ``registry``, ``table:<name>`` or ``nominal``.

    The table's TDP is the whole chip's; on a VM with a few of its cores this overstates the
    share, so a registry figure, where given, always wins; ``fallback_w`` is used where the CPU
    is not in the table.
    """
    if explicit_w is not None:
        return explicit_w, "registry"
    match = CpuTdpTable().lookup(cpu_name) if cpu_name else None
    if match is not None:
        return match.tdp_w, f"table:{match.name}"
    return fallback_w, "nominal"


class HostShareMeter:
    """A device meter with the host's share of the same interval in ``reading.host``.

    Args:
        device_meter: the GPU's meter; its reading is returned with ``host`` set.
        host_meter: RAPL over the whole host, or the process-CPU estimate.
        share: fraction of the host meter's energy charged to this device.
    """

    def __init__(self, device_meter: EnergyMeter, host_meter: EnergyMeter, share: float) -> None:
        self.device_meter, self.host_meter, self.share = device_meter, host_meter, share
        self.source, self.measured = device_meter.source, device_meter.measured

    def start(self) -> None:
        """Begin an interval on both meters."""
        self.host_meter.start()
        self.device_meter.start()

    def stop(self) -> EnergyReading:
        """End the interval; the device reading carries the host's share."""
        try:
            device = self.device_meter.stop()
        finally:
            host = self.host_meter.stop()
        parts = {k: v * self.share for k, v in host.parts_j.items()}
        notes = (*host.notes, f"host-share:{self.share:g}") if self.share != 1.0 else host.notes
        shared = replace(host, energy_j=host.energy_j * self.share, parts_j=parts, notes=notes)
        return replace(device, host=shared)


def host_meter_for(device: Device, rapl_root: Path = RAPL_ROOT) -> tuple[EnergyMeter, float]:
    """The host meter of a GPU device and the share of it to charge.

    RAPL measures the whole host, so ``device.host_share`` applies; the estimate counts only
    this worker process's CPU time, which is this device's own share already.
    """
    if RaplMeter.available(rapl_root):
        return RaplMeter(rapl_root), device.host_share
    n_cores = os.cpu_count() or 1
    tdp_w, origin = cpu_tdp_w(device.host_tdp_w, local_cpu_name(), NOMINAL_W_PER_CORE * n_cores)
    return CpuEstimateMeter(tdp_w, n_cores, tdp_origin=origin), 1.0
