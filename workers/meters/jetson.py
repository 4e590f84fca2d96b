"""Jetson board and GPU-rail energy from jetson-stats (jtop) power readings, sampled and integrated.

jtop (jetson-stats 4.x) reports ``jetson.power`` as ``{"rail": {NAME: {"power": mW, ...}},
"tot": {"power": mW, ...}}``. ``tot`` is the board's input (``VDD_IN`` on Orin and Xavier NX,
``POM_5V_IN`` on Nano), which already contains every rail, so rails are never added to it. The
GPU rail differs by module: a GPU-only rail where one exists (``GPU``, ``VDD_GPU``,
``POM_5V_GPU``), else the combined rail that holds the GPU (``VDD_GPU_SOC`` on AGX Orin,
``VDD_CPU_GPU_CV`` on Orin NX/Nano and Xavier NX); its name is kept with the reading.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import MeterError
from workers.meters.base import EnergyReading
from workers.meters.sampling import PowerSampler

# GPU-only rails first: a combined rail is used only where the module has no GPU-only one.
_GPU_ONLY_RAILS = ("GPU", "VDD_GPU", "POM_5V_GPU", "VDD_SYS_GPU")


def gpu_rail_name(power: Mapping[str, Any]) -> str | None:
    """The rail of a jtop ``power`` reading that carries the GPU, or None where none does."""
    rails = list(power.get("rail", {}))
    for name in _GPU_ONLY_RAILS:
        if name in rails:
            return name
    combined = [r for r in rails if "GPU" in r.upper()]
    return combined[0] if combined else None


def board_and_gpu_w(power: Mapping[str, Any], gpu_rail: str | None) -> tuple[float, float]:
    """Board total and GPU-rail watts of one jtop ``power`` reading (0 W without a GPU rail).

    Raises:
        MeterError: the reading has no total power, or lacks the GPU rail it had before.
    """
    try:
        total_w = float(power["tot"]["power"]) / 1000.0
        gpu_w = 0.0 if gpu_rail is None else float(power["rail"][gpu_rail]["power"]) / 1000.0
    except (KeyError, TypeError, ValueError) as e:
        raise MeterError(f"jetson-stats gave no total power: {e!r}") from e
    return total_w, gpu_w


class JetsonMeter:
    """Jetson board power from jetson-stats (``jtop``), sampled in a thread and integrated.

    ``energy_j`` is the whole module (CPU, GPU, memory, SoC) from the board's input power;
    ``parts_j["gpu_rail"]`` is the GPU rail's share of it, with the rail's name in ``notes``
    (``gpu-rail:VDD_CPU_GPU_CV`` says the figure also holds the CPU and CV engines).
    jetson-stats is an optional extra (``pip install ecobatch[jetson]``) and needs its
    ``jtop`` service running.

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
        self.gpu_rail: str | None = None
        self._sampler = PowerSampler(self._powers_w, sample_interval_s)
        self._t0 = 0.0

    def open(self) -> None:
        """Connect to the jtop service and find the GPU rail; idempotent.

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
        power = getattr(jetson, "power", None)
        self.gpu_rail = gpu_rail_name(power) if isinstance(power, Mapping) else None

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
        """End the interval and return the board's energy over it, GPU rail apart."""
        board_j, gpu_j = self._sampler.stop_all()
        notes = (f"gpu-rail:{self.gpu_rail}",) if self.gpu_rail else ("no-gpu-rail",)
        return EnergyReading(board_j, time.monotonic() - self._t0, self.source, True,
                             {"gpu_rail": gpu_j}, notes)

    def _make_client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        try:
            jtop_module = importlib.import_module("jtop")
        except ImportError as e:
            raise MeterError("Jetson metering needs jetson-stats: "
                             "pip install ecobatch[jetson]") from e
        return jtop_module.jtop(interval=self._interval_s)

    def _powers_w(self) -> tuple[float, float]:
        try:
            power = self._jetson.power
        except AttributeError as e:
            raise MeterError(f"jetson-stats gave no total power: {e}") from e
        return board_and_gpu_w(power, self.gpu_rail)
