"""Submit-time check of what prompts ask of their model: some device must serve a model that
meets each demand, or the prompts could never be routed; and which model files may answer a
demand (:func:`served_files`, :func:`eligible_files`), whose tokenizers the size limits use."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import InputError
from pipeline.fleet.devices import Registry, load_registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand, ServedModel, single_model
from pipeline.settings import Settings

ServedFile = tuple[ServedModel, Path]
"""A model some device serves, with the GGUF file its worker loads."""


def demands_of(demands: Iterable[ModelDemand]) -> set[ModelDemand]:
    """The distinct demands that ask for something (``any model`` needs no check)."""
    return {d for d in demands if d != ANY_MODEL}


def check_demands(demands: Iterable[ModelDemand], registry: Registry,
                  default_model: Path | None) -> None:
    """Refuse a demand no served model of ``registry`` meets.

    Args:
        demands: what the prompts ask for (after the job's defaults).
        registry: the devices and their models.
        default_model: ``ECOBATCH_MODEL``, the model of devices that name none.

    Raises:
        InputError: names the demand and the models served, with their quality scores.
    """
    served = [m for d in registry.devices for m in d.served_models(default_model)]
    for demand in sorted(demands_of(demands), key=lambda d: d.describe()):
        if not any(demand.admits(m) for m in served):
            offer = ", ".join(sorted({f"{m.name} (quality {_q(m.quality)})" for m in served}))
            field = "model" if demand.model and demand.min_quality is None else "min_quality"
            raise InputError(f"no device serves a model with {demand.describe()}; "
                             f"served: {offer}", field=field)


def _q(quality: float | None) -> str:
    return "unknown" if quality is None else f"{quality:g}"


def served_files(settings: Settings) -> list[ServedFile]:
    """Every (device, served model) of the fleet with the file its worker loads, in registry
    order; without a registry (the local machine, detected) the one model ``ECOBATCH_MODEL``
    names, else the bundled SmolLM2.

    Raises:
        ConfigError: the registry or a model file is unreadable.
    """
    if settings.devices is None:
        model = single_model(settings.model)
        return [(model, model.resolve(settings.model))]
    return [(m, m.resolve(d.model or settings.model))
            for d in load_registry(settings.devices).devices
            for m in d.served_models(settings.model)]


def eligible_files(demand: ModelDemand, served: list[ServedFile]) -> list[ServedFile]:
    """The served models that may answer ``demand``, one per file (the first name wins)."""
    out: dict[Path, ServedModel] = {}
    for model, path in served:
        if demand.admits(model):
            out.setdefault(path, model)
    return [(model, path) for path, model in out.items()]
