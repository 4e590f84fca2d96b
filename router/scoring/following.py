"""The ``optimal`` strategy: follow an hourly allocation plan from :mod:`router.allocation.lp`.

The plan gives each site a share of every hour's load. Within an hour the strategy sends each
batch to the site furthest behind its planned share (counted in batches), and within a site to
the device that would finish first. Hard limits and the SLO stay with
:func:`router.scoring.decide.decide`, so a plan that overloads a site gives way to the SLO; the
candidates the batch then falls back to (sites not behind their share, and devices outside the
plan last) are ranked by the plan's own objectives, in its order (``lex:cost,carbon,delay``:
the cheapest, then the cleanest, then the fastest), never by how few batches they got: a
fallback is the best deviation from the plan, not an arbitrary one.

The simulator advances the strategy's clock (:meth:`PlanStrategy.advance_to`); in the live
router, which has no such call, the strategy reads the wall clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from router.scoring.options import DeviceOption

log = logging.getLogger(__name__)

DEFAULT_ORDER = ("cost", "carbon", "delay")


def plan_order(objective: str) -> tuple[str, ...]:
    """The objectives of a plan's ``objective`` string, most important first.

    ``lex:cost,carbon,delay`` gives its order; ``weighted:carbon=3,cost=1`` the weighted
    objectives by falling weight; anything else the default order.
    """
    kind, _, rest = objective.partition(":")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if kind == "lex" and parts:
        return tuple(parts)
    if kind == "weighted" and parts:
        weights = {}
        for part in parts:
            name, _, value = part.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                return DEFAULT_ORDER
        return tuple(sorted((k for k, w in weights.items() if w > 0), key=lambda k: -weights[k]))
    return DEFAULT_ORDER


def _metric(option: DeviceOption, name: str) -> float:
    """The option's value of one plan objective; a missing price counts as the dearest."""
    if name == "cost":
        return math.inf if option.cost_usd is None else option.cost_usd
    if name == "carbon":
        return option.carbon_g
    if name == "water":
        return option.water_l
    return option.finish_s


class PlanStrategy:
    """Scores candidates by how far their site is behind the plan for the current hour.

    Args:
        shares: planned share of each hour's load per site, shape (sites, hours); columns sum
            to 1 where the hour has load (``Allocation.site_shares()``).
        site_of: site index of each device name; devices not in the plan score last.
        start: the plan's hour 0 (timezone-aware UTC).
        order: the plan's objectives, most important first; ranks the fallbacks.
    """

    name = "optimal"

    def __init__(self, shares: NDArray[np.float64], site_of: Mapping[str, int],
                 start: datetime, order: Sequence[str] = DEFAULT_ORDER) -> None:
        self.shares = shares
        self.order = tuple(order)
        self.site_of = dict(site_of)
        self.start = start
        self._now: datetime | None = None
        self._hour = -1
        self._sent = np.zeros(shares.shape[0])

    def advance_to(self, at: datetime) -> None:
        """Set the clock (the simulator calls this before each routing tick)."""
        self._now = at

    def _current_hour(self) -> int:
        now = self._now or datetime.now(UTC)
        hour = int((now - self.start).total_seconds() // 3600)
        hour = min(max(hour, 0), self.shares.shape[1] - 1)
        if hour != self._hour:
            self._hour, self._sent = hour, np.zeros(self.shares.shape[0])
        return hour

    def score(self, candidates: Sequence[DeviceOption]) -> list[float]:
        """Each candidate's rank: sites behind their share first (the furthest behind first),
        then the others by the plan's objectives, devices outside the plan last; ties within
        a site go to the device that would finish first."""
        hour = self._current_hour()
        deficit = self.shares[:, hour] * (self._sent.sum() + 1.0) - self._sent
        keys = [self._key(o, deficit) for o in candidates]
        ranked = sorted(range(len(candidates)), key=lambda i: keys[i])
        scores = [0.0] * len(candidates)
        for rank, i in enumerate(ranked):
            scores[i] = float(rank)
        return scores

    def _key(self, o: DeviceOption, deficit: NDArray[np.float64]) -> tuple[float, ...]:
        site = self.site_of.get(o.device.name)
        behind = float(deficit[site]) if site is not None else 0.0
        group = 2.0 if site is None else 0.0 if behind > 0 else 1.0
        return (group, -behind if group == 0.0 else 0.0,
                *(_metric(o, name) for name in self.order), o.finish_s)

    def chose(self, option: DeviceOption) -> None:
        """Count the batch against its site's share of this hour."""
        site = self.site_of.get(option.device.name)
        if site is not None:
            self._current_hour()
            self._sent[site] += 1.0


def load_plan(path: Path, now: datetime | None = None) -> PlanStrategy:
    """The :class:`~router.scoring.following.PlanStrategy` that follows the plan in ``path``.

    A plan whose hours are all past still loads (the strategy keeps the last hour's shares),
    with a warning.

    Raises:
        ConfigError: see :func:`read_plan`.
    """
    from router.allocation.allocation_file import read_plan  # numpy, pydantic: only when followed

    doc = read_plan(path)
    start = doc.start.astimezone(UTC)
    end = start + timedelta(hours=doc.hours)
    if (now or datetime.now(UTC)) >= end:
        log.warning("plan file %s ended at %s; following its last hour until a new plan is "
                    "made (ecobatch optimise --plan-out)", path, f"{end:%Y-%m-%dT%H:%MZ}")
    return PlanStrategy(doc.shares(), doc.site_of(), start, plan_order(doc.objective))
