"""Predictions from the registry's nominal figures, used until a device has a benchmark profile.

A device's ``nominal_tokens_per_s`` is its decode rate for one sequence. Batched decode is
memory-bound, so the aggregate rate grows sublinearly with the batch size: on the H100 anchor
(llama.cpp, SmolLM2-135M) 866 tokens/s at batch 1 became 2673 at 4 and 11713 at 64, about
``B ** 0.65``; a CPU barely gains (78 -> 89 -> 106 tokens/s at 1, 4, 16: about ``B ** 0.1``).
Prefill is compute-bound and runs many times faster than decode. Energy is the TDP over the
predicted latency, a deliberate upper bound until the device is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.fleet.devices import Device, DeviceKind
from router.predict.predictor import BatchShape, Prediction

BATCH_EXPONENT_BY_KIND: dict[DeviceKind, float] = {"nvidia": 0.65, "jetson": 0.6, "cpu": 0.1}
PREFILL_SPEEDUP = 10.0
"""Prefill tokens/s as a multiple of the aggregate decode tokens/s at the same batch size."""


def tokens_per_s_at(device: Device, batch_size: int) -> float:
    """Nominal aggregate decode tokens/s of ``device`` at ``batch_size`` concurrent sequences."""
    exponent = BATCH_EXPONENT_BY_KIND.get(device.kind, 0.5)
    return float(device.nominal_tokens_per_s * max(1, batch_size) ** exponent)


@dataclass(frozen=True)
class NominalPredictor:
    """Predicts from ``nominal_tokens_per_s`` and ``tdp_w`` of the registry (source "nominal")."""

    prefill_speedup: float = PREFILL_SPEEDUP

    def predict(self, device: Device, shape: BatchShape) -> Prediction:
        """Latency = new tokens / decode rate + prompt tokens / prefill rate; energy = TDP x it."""
        decode_tps = tokens_per_s_at(device, shape.batch_size)
        latency_s = (shape.max_new_tokens / decode_tps
                     + shape.prompt_tokens / (decode_tps * self.prefill_speedup))
        return Prediction(latency_s=latency_s, energy_j=device.tdp_w * latency_s, source="nominal")
