"""What the router predicts for a batch on a device, and the protocol of a predictor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pipeline.fleet.devices import Device


@dataclass(frozen=True)
class BatchShape:
    """The size of a batch as the predictor sees it."""

    batch_size: int
    prompt_tokens: int  # summed over the batch
    max_new_tokens: int  # summed over the batch


@dataclass(frozen=True)
class Prediction:
    """Predicted cost of one batch on one device."""

    latency_s: float
    energy_j: float
    source: str  # "profile" (fitted from `ecobatch bench`) or "nominal" (registry figures)


class Predictor(Protocol):
    """Predicts latency and energy of a batch on a device."""

    def predict(self, device: Device, shape: BatchShape) -> Prediction:
        """Predict how long ``shape`` takes on ``device`` and how much energy it uses."""
        ...
