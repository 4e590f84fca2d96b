"""Candidate devices for a batch and what sending it to each would cost, hard limits included.

An option carries every metric a strategy may weigh (operational and embodied gCO2e, predicted
finish, joules, litres, USD), computed with the same accounting functions the worker uses on the
measured energy, so a prediction and its later measurement are comparable. An option that breaks
a hard limit (the batch does not fit the device's memory, or no worker is alive on its queue)
is kept, with ``excluded`` saying why, so the decision record can show it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.accounting.account import (
    cost_usd,
    embodied_carbon_g,
    grid_water_l_per_kwh,
    operational_carbon_g,
    pue_at,
    water_l,
    wue_l_per_kwh_at,
)
from pipeline.errors import EcobatchError
from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import ServedModel
from pipeline.grid.trace import Conditions, GridConditions, device_conditions
from router.predict.predictor import BatchShape, Prediction, Predictor

log = logging.getLogger(__name__)
GIB = 1024**3
MemoryNeed = Callable[[Device, BatchShape], int | None]
"""Bytes a batch of a shape needs on a device, or None when unknown."""
ModelMemoryNeed = Callable[[Device, ServedModel, BatchShape], int | None]
"""Bytes a batch of a shape needs on a device running one of its served models, or None."""


@dataclass(frozen=True)
class GridNow:
    """Each device's grid conditions at the routing hour, and why they could not be read for
    the others (a file gone, a missing hour, an API down with no last value).

    Attributes:
        conditions: by device name.
        failed: by device name, the reason; such a device is left out of this pass.
    """

    conditions: dict[str, Conditions]
    failed: dict[str, str] = field(default_factory=dict)


def grid_now(grid: GridConditions, devices: Iterable[Device], at: datetime) -> GridNow:
    """Read every device's conditions at ``at`` with :func:`~pipeline.grid.trace.device_conditions`,
    the function the worker accounts with; a device whose data fails is recorded, not raised."""
    conditions: dict[str, Conditions] = {}
    failed: dict[str, str] = {}
    for device in devices:
        try:
            conditions[device.name] = device_conditions(grid, device, at)
        except EcobatchError as e:
            failed[device.name] = str(e)
    return GridNow(conditions, failed)


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
        excluded: why the device may not take the batch, or None when it may. On an option
            excluded because its grid data failed, ``carbon_g``, ``embodied_g`` and
            ``water_l`` are NaN: unknown.
        model: the served model the batch would run; None where models are not chosen (the
            simulator, the planner): the device's one model.
        key: the option's name in a decision record when the device name alone is ambiguous
            (``device/model`` for a device that serves several models); empty: the device's.
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
    model: ServedModel | None = None
    key: str = ""

    @property
    def label(self) -> str:
        """The option's name: :attr:`key`, else the device's name."""
        return self.key or self.device.name

    @property
    def quality(self) -> float | None:
        """The quality score of the model it would run; None when unknown or not chosen."""
        return self.model.quality if self.model is not None else None

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


def option_for(device: Device, pred: Prediction, cond: Conditions, backlog_s: float, *,
               memory_bytes: int | None = None, excluded: str | None = None,
               model: ServedModel | None = None, key: str = "") -> DeviceOption:
    """Price a predicted batch on ``device`` (running ``model``) at its grid conditions now."""
    pue = pue_at(device, cond.temperature_c)
    energy_j = pred.energy_j
    return DeviceOption(
        device=device, prediction=pred, backlog_s=backlog_s,
        carbon_g=operational_carbon_g(energy_j, pue, cond.intensity_g_per_kwh),
        embodied_g=embodied_carbon_g(device.embodied_kgco2e, pred.latency_s,
                                     device.lifetime_years),
        water_l=water_l(energy_j, wue_l_per_kwh_at(device, cond.temperature_c), pue,
                        grid_water_l_per_kwh(device.zone)),
        cost_usd=cost_usd(energy_j, pue, cond.price_usd_per_kwh),
        memory_bytes=memory_bytes, excluded=excluded, model=model, key=key,
    )


def unpriced(device: Device, pred: Prediction, backlog_s: float, reason: str, *,
             model: ServedModel | None = None, key: str = "") -> DeviceOption:
    """An option that cannot be priced (its grid data failed): excluded, figures unknown."""
    return DeviceOption(device=device, prediction=pred, carbon_g=math.nan, backlog_s=backlog_s,
                        embodied_g=math.nan, water_l=math.nan,
                        excluded=f"no grid data: {reason}", model=model, key=key)


def options_for(
    registry: Registry,
    shape: BatchShape,
    predictor: Predictor,
    grid: GridNow,
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
        grid: conditions of each device now (see :func:`grid_now`); a device whose conditions
            failed is kept as an excluded option with the reason.
        backlog_s: predicted queued seconds per device name (missing means idle).
        alive: names of devices with a live worker; None treats every device as alive.
        memory_need: predicted bytes of the batch per device; None skips the memory check.
        allowed: restrict to these device names (a deferred job's plan); None allows all.
    """
    options = []
    for device in candidate_devices(registry, shape, allowed):
        pred, backlog = predictor.predict(device, shape), backlog_s.get(device.name, 0.0)
        cond = grid.conditions.get(device.name)
        if cond is None:
            options.append(unpriced(device, pred, backlog, grid.failed.get(device.name, "?")))
            continue
        need = memory_need(device, shape) if memory_need else None
        options.append(option_for(device, pred, cond, backlog, memory_bytes=need,
                                  excluded=excluded_why(device, need, alive)))
    return options


def candidate_devices(registry: Registry, shape: BatchShape,
                      allowed: Collection[str] | None) -> Iterator[Device]:
    """Devices, in registry order, whose ``max_batch_size`` admits ``shape`` and whose name is
    ``allowed`` (None allows all)."""
    for device in registry.devices:
        if shape.batch_size <= device.max_batch_size and (allowed is None
                                                           or device.name in allowed):
            yield device


def excluded_why(device: Device, need: int | None, alive: Collection[str] | None) -> str | None:
    """Why ``device`` may not take the batch (no live worker, too little memory), or None."""
    if alive is not None and device.name not in alive:
        return "no live worker"
    if need is not None and need > device.memory_bytes:
        return f"needs {need / GIB:.2f} GiB > {device.memory_gb:g} GiB of memory"
    return None


class GridWarnings:
    """Logs a device's failing grid data once when it starts failing and once when it reads
    again, however many routing passes it stays out of (a pass runs several times a second)."""

    def __init__(self, what: str = "routing") -> None:
        self.what = what
        self._failing: set[str] = set()

    def note(self, failed: Mapping[str, str]) -> None:
        """Take this pass's failures (device name -> reason)."""
        for name in sorted(failed.keys() - self._failing):
            log.warning("device %s is left out of %s until its grid data reads again: %s; "
                        "the other devices go on", name, self.what, failed[name])
        for name in sorted(self._failing - failed.keys()):
            log.info("device %s: grid data reads again; back in %s", name, self.what)
        self._failing = set(failed)
