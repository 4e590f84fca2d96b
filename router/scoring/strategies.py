"""Strategies: each scores the candidate devices of a batch, lower being better.

A strategy only scores; :func:`router.scoring.decide.decide` applies the hard limits (memory, a live
worker, the job's latency target), picks the best-scoring candidate that meets them and records
why. Built-in strategies are listed in ``pipeline.policy.BUILTIN_STRATEGIES``; a third-party one
is a class (or factory) registered under the entry-point group ``ecobatch.strategies``, e.g. in
its ``pyproject.toml``::

    [project.entry-points."ecobatch.strategies"]
    cheapest = "mypkg.routing:CheapestStrategy"

and then usable as ``--strategy cheapest``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from pipeline.errors import ConfigError
from pipeline.policy import (
    DEFAULT_WEIGHTS,
    METRICS,
    STRATEGY_GROUP,
    normalise_weights,
    strategy_names,
)
from router.scoring.options import DeviceOption


class Strategy(Protocol):
    """Scores candidate devices for a batch (lower is better) and learns which one was chosen."""

    name: str

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """One score per candidate (non-empty, in registry order), lower is better."""
        ...

    def chose(self, option: DeviceOption) -> None:
        """Called with the option finally chosen (stateful strategies advance here)."""
        ...


class BaseStrategy:
    """Convenience base: a stateless strategy needs only ``name`` and ``score``."""

    name = "base"

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Subclasses override this."""
        raise NotImplementedError

    def chose(self, option: DeviceOption) -> None:
        """Stateless: nothing to learn."""


class GreedyStrategy(BaseStrategy):
    """Baseline of the edge-cluster study: the first device able to take the batch."""

    name = "greedy"

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Registry position: the first candidate scores best."""
        return [float(i) for i in range(len(candidates))]


class RoundRobinStrategy(BaseStrategy):
    """Each batch to the next device in registry order after the previous batch's device."""

    name = "round_robin"

    def __init__(self) -> None:
        self._last: str | None = None

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Cyclic distance from the device after the last one chosen."""
        names = [o.device.name for o in candidates]
        start = names.index(self._last) + 1 if self._last in names else 0
        n = len(names)
        return [float((i - start) % n) for i in range(n)]

    def chose(self, option: DeviceOption) -> None:
        """Remember the device so that the next batch goes to the one after it."""
        self._last = option.device.name


class CarbonStrategy(BaseStrategy):
    """Least predicted gCO2e, operational plus embodied."""

    name = "carbon"

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Predicted operational + embodied gCO2e of the batch on each candidate."""
        return [o.total_carbon_g for o in candidates]


class LatencyStrategy(BaseStrategy):
    """Earliest predicted finish: the device's backlog plus the batch's own latency."""

    name = "latency"

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Predicted seconds until the batch is done on each candidate."""
        return [o.finish_s for o in candidates]


class WeightedStrategy(BaseStrategy):
    """Weighted sum of min-max normalised carbon, latency, energy, water and cost.

    Each metric is rescaled over the candidates to [0, 1] (best 0, worst 1; all equal gives 0),
    so a weight is the share of the decision its metric carries whatever its unit. A candidate
    with no price data counts as the most expensive, so missing data never looks cheap.
    """

    name = "weighted"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = normalise_weights(weights or DEFAULT_WEIGHTS)

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Sum over metrics of weight x normalised metric."""
        table = [o.metrics() for o in candidates]
        totals = [0.0] * len(candidates)
        for metric, weight in self.weights.items():
            for i, x in enumerate(_min_max([row[metric] for row in table])):
                totals[i] += weight * x
        return totals


def _min_max(values: Sequence[float | None]) -> list[float]:
    known = [v for v in values if v is not None]
    if not known:
        return [0.0] * len(values)
    lo, hi = min(known), max(known)
    span = hi - lo
    return [1.0 if v is None else (v - lo) / span if span > 0 else 0.0 for v in values]


_BUILTIN: dict[str, Callable[[], Strategy]] = {
    "greedy": GreedyStrategy,
    "round_robin": RoundRobinStrategy,
    "carbon": CarbonStrategy,
    "latency": LatencyStrategy,
    "weighted": WeightedStrategy,
}


def get_strategy(name: str, weights: Mapping[str, float] | None = None,
                 plan_file: Path | None = None) -> Strategy:
    """Return a fresh strategy called ``name``.

    Args:
        name: a built-in name or one registered under ``ecobatch.strategies``.
        weights: the weighted strategy's weights over ``pipeline.policy.METRICS``.
        plan_file: the allocation plan the ``optimal`` strategy follows (``ECOBATCH_PLAN_FILE``).

    Raises:
        ConfigError: no strategy has that name (the message lists the known ones), a plugin
            failed to load, or ``optimal`` without a valid plan file.
    """
    if name == "weighted":
        return WeightedStrategy(weights)
    if name == "optimal":
        return _plan_strategy(plan_file)
    if name in _BUILTIN:
        return _BUILTIN[name]()
    found = [ep for ep in entry_points(group=STRATEGY_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"unknown strategy {name!r} (known: {', '.join(strategy_names())})")
    try:
        strategy: Strategy = found[0].load()()
    except Exception as e:  # a plugin's import or constructor can raise anything
        raise ConfigError(f"strategy plugin {name!r} ({found[0].value}) failed to load: {e}") from e
    return strategy


def _plan_strategy(plan_file: Path | None) -> Strategy:
    if plan_file is None:
        raise ConfigError("strategy 'optimal' needs a plan file: set ECOBATCH_PLAN_FILE to one "
                          "made by `ecobatch optimise --devices REGISTRY --plan-out plan.json`")
    from router.scoring.following import load_plan

    return load_plan(plan_file)


__all__ = ["METRICS", "BaseStrategy", "Strategy", "get_strategy", "strategy_names"]
