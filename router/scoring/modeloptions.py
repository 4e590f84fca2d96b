"""Candidate (device, model) pairs for a batch: the router chooses a model and a device together.

Every served model of every device that may take the batch is one option, priced with the
prediction for that model (:mod:`router.predict.permodel`) and memory-checked with that
model's GGUF header. Models that do not meet the batch's :class:`ModelDemand` (a named model, a
quality floor) are not candidates at all: a quality floor is a hard limit, like memory.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand, ServedModel
from router.predict.permodel import predict_model
from router.predict.predictor import BatchShape, Predictor
from router.scoring.options import (
    DeviceOption,
    GridNow,
    ModelMemoryNeed,
    candidate_devices,
    excluded_why,
    option_for,
    unpriced,
)


@dataclass(frozen=True)
class ModelChoice:
    """What a batch asks of its model, and where a device's default model is.

    Attributes:
        demand: the batch's model name and quality floor.
        default_model: ``ECOBATCH_MODEL``, the model of devices that name none.
        memory_need: bytes of the batch per device and model; None skips the memory check.
    """

    demand: ModelDemand = ANY_MODEL
    default_model: Path | None = None
    memory_need: ModelMemoryNeed | None = None


def model_options_for(
    registry: Registry,
    shape: BatchShape,
    predictor: Predictor,
    grid: GridNow,
    backlog_s: Mapping[str, float],
    choice: ModelChoice,
    *,
    alive: Collection[str] | None = None,
    allowed: Collection[str] | None = None,
) -> list[DeviceOption]:
    """One option per device and served model meeting ``choice.demand``, in registry order.

    Args:
        registry: the devices and the models each serves.
        shape: the batch.
        predictor: latency and energy; per model where it is a ``ModelPredictors``.
        grid: conditions of each device now; a device whose conditions failed is kept as
            excluded options with the reason.
        backlog_s: predicted queued seconds per device name (missing means idle).
        choice: the demand, the default model and the memory check.
        alive: names of devices with a live worker; None treats every device as alive.
        allowed: restrict to these device names (a deferred job's plan); None allows all.
    """
    options = []
    for device in candidate_devices(registry, shape, allowed):
        served = device.served_models(choice.default_model)
        for model in (m for m in served if choice.demand.admits(m)):
            key = f"{device.name}/{model.name}" if len(served) > 1 else ""
            options.append(_option(device, model, key, shape, predictor, grid,
                                   backlog_s.get(device.name, 0.0), choice, alive))
    return options


def _option(device: Device, model: ServedModel, key: str, shape: BatchShape,
            predictor: Predictor, grid: GridNow, backlog_s: float, choice: ModelChoice,
            alive: Collection[str] | None) -> DeviceOption:
    pred = predict_model(predictor, device, model, shape, choice.default_model)
    cond = grid.conditions.get(device.name)
    if cond is None:
        return unpriced(device, pred, backlog_s, grid.failed.get(device.name, "?"),
                        model=model, key=key)
    need = choice.memory_need(device, model, shape) if choice.memory_need else None
    return option_for(device, pred, cond, backlog_s, memory_bytes=need, model=model, key=key,
                      excluded=excluded_why(device, need, alive))
