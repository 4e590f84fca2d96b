"""Submit-time check of what prompts ask of their model: some device must serve a model that
meets each demand, or the prompts could never be routed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import InputError
from pipeline.fleet.devices import Registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand


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
