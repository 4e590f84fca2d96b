"""What a job asks of the router: strategy names, weights of the weighted score and a latency SLO.

The router (``router.scoring.strategies``) implements the strategies; this module only knows their names,
so that settings, intake and the CLI can validate a job without importing the router. Built-in
names are listed here; third-party strategies register under the entry-point group
:data:`STRATEGY_GROUP` and are found by name the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Final

from pipeline.errors import ConfigError

STRATEGY_GROUP: Final = "ecobatch.strategies"
BUILTIN_STRATEGIES: Final = ("greedy", "round_robin", "carbon", "latency", "weighted",
                              "optimal")
METRICS: Final = ("carbon", "latency", "energy", "water", "cost")
"""What the weighted strategy can weigh: gCO2e (operational + embodied), predicted finish
seconds, joules, litres and USD of the batch on each candidate device."""
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {"carbon": 0.5, "latency": 0.5}


def plugin_strategy_names() -> list[str]:
    """Names registered by installed packages under :data:`STRATEGY_GROUP`, sorted."""
    return sorted({ep.name for ep in entry_points(group=STRATEGY_GROUP)} - set(BUILTIN_STRATEGIES))


def strategy_names() -> list[str]:
    """Every strategy name a job may ask for: the built-ins, then installed plugins."""
    return [*BUILTIN_STRATEGIES, *plugin_strategy_names()]


def check_strategy(name: str) -> str:
    """Return ``name`` if it names a strategy.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    known = strategy_names()
    if name not in known:
        raise ConfigError(f"unknown strategy {name!r} (known: {', '.join(known)})")
    return name


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights over :data:`METRICS` scaled to sum to 1, zero weights dropped.

    After scaling, a weight is the share of the score its metric decides: with
    ``carbon=3, latency=1`` carbon decides three quarters.

    Raises:
        ConfigError: an unknown metric, a negative or non-finite weight, or all zero.
    """
    for metric, w in weights.items():
        if metric not in METRICS:
            raise ConfigError(f"weight {metric!r}: unknown metric (known: {', '.join(METRICS)})")
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"weight {metric!r}: must be a finite number >= 0, got {w}")
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError("weights: at least one weight must be > 0")
    return {m: w / total for m, w in weights.items() if w > 0}


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``"carbon=3,latency=1"`` into normalised weights.

    Raises:
        ConfigError: malformed text; the message names the bad part.
    """
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        metric, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[metric.strip()] = float(value)
        except ValueError as e:
            raise ConfigError(f"weights: {part!r} is not METRIC=NUMBER") from e
    return normalise_weights(weights)


def check_deadline(deadline: datetime, now: datetime) -> datetime:
    """Return ``deadline`` in UTC if it is timezone-aware and after ``now``.

    Raises:
        ConfigError: naive (no time zone) or not in the future.
    """
    if deadline.tzinfo is None:
        raise ConfigError(f"deadline {deadline.isoformat()} has no time zone (add Z or +HH:MM)")
    if deadline <= now:
        raise ConfigError(f"deadline {deadline.astimezone(UTC):%Y-%m-%dT%H:%MZ} is in the past")
    return deadline.astimezone(UTC)
