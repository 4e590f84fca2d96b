"""Candidate devices for a batch and what sending it to each would cost, hard limits included.

An option carries every metric a strategy may weigh (operational and embodied gCO2e, predicted
finish, joules, litres, USD), computed with the same accounting functions the worker uses on the
measured energy, so a prediction and its later measurement are comparable. An option that breaks
a hard limit (the batch does not fit the device's memory, or no worker is alive on its queue)
is kept, with ``excluded`` saying why, so the decision record can show it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from pipeline.accounting import (
    cost_usd,
    embodied_carbon_g,
    grid_water_l_per_kwh,
    operational_carbon_g,
    pue_at,
    water_l,
    wue_l_per_kwh_at,
)
from pipeline.devices import Device, Registry
from pipeline.grid import GridConditions
from router.predictor import BatchShape, Prediction, Predictor

GIB = 1024**3
MemoryNeed = Callable[[Device, BatchShape], int | None]
"""Bytes a batch of a shape needs on a device, or None when unknown."""


@dataclass(frozen=True, slots=True)
class ZoneNow:
    """Grid and weather of one zone at the routing hour."""

    intensity_g_per_kwh: float
    price_usd_per_kwh: float | None
    temperature_c: float | None


def zones_now(grid: GridConditions, zones: Collection[str], at: datetime) -> dict[str, ZoneNow]:
    """Read intensity, price and temperature of each zone at ``at`` (timezone-aware UTC)."""
    return {z: ZoneNow(grid.intensity_g_per_kwh(z, at), grid.price_usd_per_kwh(z, at),
                       grid.temperature_c(z, at)) for z in zones}


@dataclass(frozen=True, slots=True)
class DeviceOption:
    """One candidate device for a batch, with what sending the batch there would cost.

    Attributes:
        device: the candidate device.
        prediction: predicted latency and energy of the batch on it.
        carbon_g: predicted operational gCO2e (energy x PUE(temperature) x zone intensity).
        backlog_s: predicted seconds of work already queued or running on it.
        embodied_g: the device's embodied gCO2e amortised over the batch's busy time.
        water_l: predicted litres (site WUE plus PUE x grid water).
        cost_usd: predicted USD; None where the zone has no price data.
        memory_bytes: predicted memory the batch needs there; None when unknown.
        excluded: why the device may not take the batch, or None when it may.
    """

    device: Device
    prediction: Prediction
    carbon_g: float
    backlog_s: float
    embodied_g: float = 0.0
    water_l: float = 0.0
    cost_usd: float | None = None
    memory_bytes: int | None = None
    excluded: str | None = None

    @property
    def finish_s(self) -> float:
        """Predicted seconds from now until the batch is done: backlog plus its own latency."""
        return self.backlog_s + self.prediction.latency_s

    @property
    def total_carbon_g(self) -> float:
        """Operational plus embodied gCO2e: what the carbon strategy minimises."""
        return self.carbon_g + self.embodied_g

    def metrics(self) -> dict[str, float | None]:
        """The weighable metrics by name (see ``pipeline.policy.METRICS``)."""
        return {"carbon": self.total_carbon_g, "latency": self.finish_s,
                "energy": self.prediction.energy_j, "water": self.water_l, "cost": self.cost_usd}


def option_for(device: Device, pred: Prediction, zone: ZoneNow, backlog_s: float, *,
               memory_bytes: int | None = None, excluded: str | None = None) -> DeviceOption:
    """Price a predicted batch on ``device`` with the conditions of its zone now."""
    pue = pue_at(device, zone.temperature_c)
    energy_j = pred.energy_j
    return DeviceOption(
        device=device, prediction=pred, backlog_s=backlog_s,
        carbon_g=operational_carbon_g(energy_j, pue, zone.intensity_g_per_kwh),
        embodied_g=embodied_carbon_g(device.embodied_kgco2e, pred.latency_s,
                                     device.lifetime_years),
        water_l=water_l(energy_j, wue_l_per_kwh_at(device, zone.temperature_c), pue,
                        grid_water_l_per_kwh(device.zone)),
        cost_usd=cost_usd(energy_j, pue, zone.price_usd_per_kwh),
        memory_bytes=memory_bytes, excluded=excluded,
    )


def options_for(
    registry: Registry,
    shape: BatchShape,
    predictor: Predictor,
    zones: Mapping[str, ZoneNow],
    backlog_s: Mapping[str, float],
    *,
    alive: Collection[str] | None = None,
    memory_need: MemoryNeed | None = None,
    allowed: Collection[str] | None = None,
) -> list[DeviceOption]:
    """One option per device whose ``max_batch_size`` admits ``shape``, in registry order.

    Args:
        registry: the devices.
        shape: the batch.
        predictor: latency and energy predictions.
        zones: conditions of each device zone now (see :func:`zones_now`).
        backlog_s: predicted queued seconds per device name (missing means idle).
        alive: names of devices with a live worker; None treats every device as alive.
        memory_need: predicted bytes of the batch per device; None skips the memory check.
        allowed: restrict to these device names (a deferred job's plan); None allows all.
    """
    options = []
    for device in registry.devices:
        if shape.batch_size > device.max_batch_size:
            continue
        if allowed is not None and device.name not in allowed:
            continue
        need = memory_need(device, shape) if memory_need else None
        options.append(option_for(device, predictor.predict(device, shape), zones[device.zone],
                                  backlog_s.get(device.name, 0.0), memory_bytes=need,
                                  excluded=_excluded(device, need, alive)))
    return options


def _excluded(device: Device, need: int | None, alive: Collection[str] | None) -> str | None:
    """Why ``device`` may not take the batch (no live worker, too little memory), or None."""
    if alive is not None and device.name not in alive:
        return "no live worker"
    if need is not None and need > device.memory_bytes:
        return f"needs {need / GIB:.2f} GiB > {device.memory_gb:g} GiB of memory"
    return None
