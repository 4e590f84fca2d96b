"""The NSGA-II model menu of a live device registry (``ecobatch optimise --pareto --method nsga2
--models registry``), instead of the synthetic Qwen3 menu.

Each distinct served model (by name, in registry order) is one entry; the *base* model is the
first model of the registry's first device, the one each site's capacity and J/token are
predicted for (:func:`router.sim.scenario.registry_sites`).

- Quality: the model's registry score over 100 (the registry's 0-100 scale to the menu's 0-1),
  with the registry's source of the score. A model without a score counts 0 and says so.
- Speed (tokens/s) and energy (J/token) relative to the base model, from the first of:

  1. ``bench`` profiles of both model files on one device that serves both (``ecobatch bench
     --model``): latency measured, energy as the profiles' meter says (measured, or the TDP x
     utilisation estimate of a machine without an energy counter; the label names it);
  2. the registry's ``nominal_tokens_per_s`` of the two models (a model's own, else its
     device's), energy as TDP x time like the nominal predictor: an estimate;
  3. the ratio of the two GGUF files' weight bytes (decode is memory-bound: every weight is
     read once per token, so time and energy per token grow with them): an estimate.

  Where each model's figures come from is kept in :attr:`ModelOption.figures_source`.

A site offers a model when one of its devices serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import ServedModel
from router.allocation.moo.instance import ModelOption
from router.live.memory import read_footprint
from router.predict.permodel import ModelPredictors, load_model_predictors
from router.predict.predictor import BatchShape
from router.predict.profiled import load_profiles


@dataclass(frozen=True)
class RegistryMenu:
    """The menu of a registry and which site offers which of its models.

    Attributes:
        models: one entry per served model name, the base model first.
        offers: (sites, models) booleans.
    """

    models: tuple[ModelOption, ...]
    offers: NDArray[np.bool_]


@dataclass(frozen=True)
class MenuProfiles:
    """``bench`` profiles per model file, and how each (device, file)'s energy was metered.

    Attributes:
        predictors: per-model predictors fitted to the profiles.
        energy: by (device name, model file name), the profile's energy source with
            ``measured`` or ``estimated`` (``nvml, measured``; ``estimate:tdp*cpu-util,
            estimated``).
    """

    predictors: ModelPredictors
    energy: Mapping[tuple[str, str], str] = field(default_factory=dict)


def load_menu_profiles(engine: Engine, registry: Registry,
                       default_model: Path | None = None) -> MenuProfiles:
    """The profiles of every served model file of ``registry`` in ``engine``.

    Raises:
        ServiceError: the database cannot be read.
    """
    energy = {}
    for name in sorted(predictors_files(registry, default_model)):
        for device, rows in load_profiles(engine, registry, name).items():
            if rows:
                measured = all(r.energy_measured for r in rows)
                energy[(device, name)] = (f"{rows[-1].energy_source or 'unnamed meter'}, "
                                          f"{'measured' if measured else 'estimated'}")
    return MenuProfiles(load_model_predictors(engine, registry, default_model), energy)


def predictors_files(registry: Registry, default_model: Path | None = None) -> set[str]:
    """The model file names profiles are kept under, of every served model that has one."""
    return {m.profile_name for _, m in _served(registry, default_model) if m.profile_name}


def registry_menu(registry: Registry, members: list[list[str]], shape: BatchShape,
                  profiles: MenuProfiles | None = None,
                  default_model: Path | None = None) -> RegistryMenu:
    """The menu of ``registry``'s served models for sites made of ``members`` (device names
    per site, as :func:`router.sim.scenario.registry_sites` returns them).

    Args:
        registry: the devices and the models each serves.
        members: device names of each site.
        shape: the batch the figures are predicted for (the router's batch size).
        profiles: ``bench`` profiles per model (:func:`load_menu_profiles`); None: none.
        default_model: ``ECOBATCH_MODEL``, the model of devices that name none.

    Raises:
        ConfigError: a model file is missing or unreadable where its weights are needed.
    """
    served = _served(registry, default_model)
    base_device, base = served[0]
    options = []
    for device, model in served:
        if model.name == base.name:
            options.append(_option(model, 1.0, 1.0, "the base model: site capacity is predicted for it"))
            continue
        speed, energy, source = _relative(registry, model, base, shape, profiles,
                                          default_model, device, base_device)
        options.append(_option(model, speed, energy, source))
    index = {m.name: i for i, m in enumerate(options)}
    by_name = {d.name: d for d in registry.devices}
    offers = np.zeros((len(members), len(options)), dtype=bool)
    for s, names in enumerate(members):
        for name in names:
            for m in by_name[name].served_models(default_model):
                offers[s, index[m.name]] = True
    return RegistryMenu(tuple(options), offers)


def served_model_count(registry: Registry, default_model: Path | None = None) -> int:
    """How many distinct models (by name) the registry serves."""
    return len(_served(registry, default_model))


def _served(registry: Registry, default_model: Path | None) -> list[tuple[Device, ServedModel]]:
    """Each distinct served model by name, with the first device serving it, in registry
    order."""
    out: dict[str, tuple[Device, ServedModel]] = {}
    for device in registry.devices:
        for model in device.served_models(default_model):
            out.setdefault(model.name, (device, model))
    return list(out.values())


def _option(model: ServedModel, speed: float, energy: float, figures: str) -> ModelOption:
    if model.quality is None:
        return ModelOption(model.name, 0.0, "no score in the registry (counts 0)", speed, energy,
                           figures)
    return ModelOption(model.name, model.quality / 100.0,
                       f"registry: {model.quality_source or 'no source given'}", speed, energy,
                       figures)


def _relative(registry: Registry, model: ServedModel, base: ServedModel, shape: BatchShape,
              profiles: MenuProfiles | None, default_model: Path | None,
              device: Device, base_device: Device) -> tuple[float, float, str]:
    """Speed and energy of ``model`` relative to ``base``, and where they come from."""
    if profiles is not None:
        measured = _from_profiles(registry, model, base, shape, profiles, default_model)
        if measured is not None:
            return measured
    if model.nominal_tokens_per_s is not None or base.nominal_tokens_per_s is not None:
        rate = model.nominal_tokens_per_s or device.nominal_tokens_per_s
        base_rate = base.nominal_tokens_per_s or device.nominal_tokens_per_s
        return (rate / base_rate, base_rate / rate,
                f"estimate: registry nominal_tokens_per_s {rate:g} vs {base_rate:g} on "
                f"{device.name} (energy: TDP x time)")
    weights = _weights_bytes(device, model, default_model)
    base_weights = _weights_bytes(base_device, base, default_model)
    return (base_weights / weights, weights / base_weights,
            f"estimate: GGUF weights {weights / 1e6:,.0f} MB vs {base_weights / 1e6:,.0f} MB "
            "(decode reads every weight per token)")


def _from_profiles(registry: Registry, model: ServedModel, base: ServedModel,
                   shape: BatchShape, profiles: MenuProfiles,
                   default_model: Path | None) -> tuple[float, float, str] | None:
    """Figures from both models' bench profiles on one device serving both."""
    if model.profile_name is None or base.profile_name is None:
        return None
    own, base_own = (profiles.predictors.by_file.get(model.profile_name),
                     profiles.predictors.by_file.get(base.profile_name))
    if own is None or base_own is None:
        return None
    for device in registry.devices:
        names = {m.name for m in device.served_models(default_model)}
        if not {model.name, base.name} <= names:
            continue
        pred, base_pred = own.predict(device, shape), base_own.predict(device, shape)
        if pred.source == base_pred.source == "profile":
            energy = sorted({profiles.energy.get((device.name, name), "energy source unknown")
                             for name in (model.profile_name, base.profile_name)})
            return (base_pred.latency_s / pred.latency_s, pred.energy_j / base_pred.energy_j,
                    f"bench profiles of both on {device.name}: latency measured, energy "
                    f"{' / '.join(energy)}")
    return None


def _weights_bytes(device: Device, model: ServedModel, default_model: Path | None) -> int:
    path = model.resolve(device.model or default_model)
    try:
        return read_footprint(path).weights_bytes
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"model {model.name}: cannot read the weights of {path}: {e}") from e
