"""Predictions per served model: a device serving several models is profiled per model.

``ecobatch bench --model FILE`` stores a device's profile under the GGUF file's name; a device
that serves several models is predicted from the profile of the model a batch would run (its
``nominal_tokens_per_s`` where the registry gives one, before a profile exists). A device with
one model keeps its newest profile, whichever file it was measured with, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import ServedModel
from router.predict.predictor import BatchShape, Prediction, Predictor
from router.predict.profiled import load_predictor


@dataclass
class ModelPredictors:
    """A :class:`Predictor` (the newest profiles) plus one per profiled model file.

    Attributes:
        default: predicts a device's one model, and any model without a profile of its own.
        by_file: by GGUF file name, the predictor fitted to that model's profiles.
    """

    default: Predictor
    by_file: dict[str, Predictor] = field(default_factory=dict)

    def predict(self, device: Device, shape: BatchShape) -> Prediction:
        """The default prediction (the :class:`Predictor` protocol)."""
        return self.default.predict(device, shape)

    def predict_model(self, device: Device, model: ServedModel, shape: BatchShape,
                      default_model: Path | None = None) -> Prediction:
        """Predict ``shape`` on ``device`` running ``model``."""
        if len(device.served_models(default_model)) == 1:
            return self.default.predict(device, shape)
        if model.nominal_tokens_per_s is not None:
            device = device.model_copy(update={"nominal_tokens_per_s": model.nominal_tokens_per_s})
        name = model.profile_name
        chosen = self.by_file.get(name, self.default) if name else self.default
        return chosen.predict(device, shape)


def predict_model(predictor: Predictor, device: Device, model: ServedModel, shape: BatchShape,
                  default_model: Path | None = None) -> Prediction:
    """Per model with :class:`ModelPredictors`; any other predictor predicts the device."""
    if isinstance(predictor, ModelPredictors):
        return predictor.predict_model(device, model, shape, default_model)
    return predictor.predict(device, shape)


def load_model_predictors(engine: Engine, registry: Registry,
                          default_model: Path | None = None) -> ModelPredictors:
    """The newest profiles, and the profiles of every model a multi-model device serves.

    Raises:
        ServiceError: the database cannot be read.
    """
    files = {m.profile_name for d in registry.devices if d.models is not None
             for m in d.models if m.profile_name}
    return ModelPredictors(load_predictor(engine, registry),
                           {f: load_predictor(engine, registry, f) for f in sorted(files)})
