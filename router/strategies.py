"""Strategies that pick a device for a batch among the devices able to take it.

A strategy sees one :class:`DeviceOption` per candidate device, in registry order. The router
builds options only for devices whose ``max_batch_size`` admits the batch (see
:func:`options_for`); since batches are cut at the largest device's ``max_batch_size``
(:func:`router.batching.effective_batch_size`), at least one device always qualifies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.devices import Device, Registry
from pipeline.errors import ConfigError
from router.predictor import BatchShape, Prediction, Predictor

J_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class DeviceOption:
    """One candidate device for a batch, with what sending the batch there would cost.

    Attributes:
        device: the candidate device.
        prediction: predicted latency and energy of the batch on it.
        carbon_g: predicted operational gCO2e (energy x PUE x grid intensity of its zone now).
        backlog_s: predicted seconds of work already queued or running on it.
    """

    device: Device
    prediction: Prediction
    carbon_g: float
    backlog_s: float

    @property
    def finish_s(self) -> float:
        """Predicted seconds from now until the batch is done: backlog plus its own latency."""
        return self.backlog_s + self.prediction.latency_s


class Strategy(Protocol):
    """Chooses one device option for a batch."""

    name: str

    def choose(self, candidates: Sequence[DeviceOption]) -> DeviceOption:
        """Pick one of ``candidates`` (non-empty, in registry order)."""
        ...


class GreedyStrategy:
    """Baseline: the first device in registry order that can take the batch; ignores carbon."""

    name = "greedy"

    def choose(self, candidates: Sequence[DeviceOption]) -> DeviceOption:
        """Return the first candidate."""
        return _non_empty(candidates)[0]


class CarbonStrategy:
    """Least predicted gCO2e; ties broken by the earliest predicted finish."""

    name = "carbon"

    def choose(self, candidates: Sequence[DeviceOption]) -> DeviceOption:
        """Return the candidate with the least ``carbon_g`` (then least ``finish_s``)."""
        return min(_non_empty(candidates), key=lambda o: (o.carbon_g, o.finish_s))


class LatencyStrategy:
    """Earliest predicted finish (backlog + latency); ties broken by the least gCO2e."""

    name = "latency"

    def choose(self, candidates: Sequence[DeviceOption]) -> DeviceOption:
        """Return the candidate with the least ``finish_s`` (then least ``carbon_g``)."""
        return min(_non_empty(candidates), key=lambda o: (o.finish_s, o.carbon_g))


_STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "greedy": GreedyStrategy,
    "carbon": CarbonStrategy,
    "latency": LatencyStrategy,
}


def strategy_names() -> list[str]:
    """Names :func:`get_strategy` accepts."""
    return list(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """Return the strategy called ``name``.

    Raises:
        ConfigError: no strategy has that name; the message lists the known ones.
    """
    try:
        return _STRATEGIES[name]()
    except KeyError as e:
        known = ", ".join(_STRATEGIES)
        raise ConfigError(f"unknown strategy {name!r} (known: {known})") from e


def _non_empty(candidates: Sequence[DeviceOption]) -> Sequence[DeviceOption]:
    if not candidates:
        raise ConfigError("no device can take this batch (batch larger than every max_batch_size)")
    return candidates


def carbon_g(energy_j: float, pue: float, intensity_g_per_kwh: float) -> float:
    """Operational gCO2e of ``energy_j`` of IT energy at a site of ``pue`` on a given grid."""
    return energy_j / J_PER_KWH * pue * intensity_g_per_kwh


def options_for(
    registry: Registry,
    shape: BatchShape,
    predictor: Predictor,
    intensity_by_zone: Mapping[str, float],
    backlog_s: Mapping[str, float],
) -> list[DeviceOption]:
    """One option per device that can take ``shape`` (batch size <= its max), in registry order.

    Args:
        registry: the devices.
        shape: the batch.
        predictor: latency and energy predictions.
        intensity_by_zone: grid gCO2e/kWh of each device zone, now.
        backlog_s: predicted queued seconds per device name (missing means idle).
    """
    options = []
    for device in registry.devices:
        if shape.batch_size > device.max_batch_size:
            continue
        pred = predictor.predict(device, shape)
        grams = carbon_g(pred.energy_j, device.pue, intensity_by_zone[device.zone])
        options.append(DeviceOption(device, pred, grams, backlog_s.get(device.name, 0.0)))
    return options
