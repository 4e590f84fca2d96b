"""The ``optimal`` strategy: follow an hourly allocation plan from :mod:`router.optimal`.

The plan gives each site a share of every hour's load. Within an hour the strategy sends each
batch to the site furthest behind its planned share (counted in batches, which are cut to the
same size), and within a site to the device that would finish first. Hard limits and the SLO
stay with :func:`router.decide.decide`, so a plan that overloads a site gives way to the SLO.

The simulator advances the strategy's clock (:meth:`PlanStrategy.advance_to`); in the live
router, which has no such call, the strategy reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from router.options import DeviceOption


class PlanStrategy:
    """Scores candidates by how far their site is behind the plan for the current hour.

    Args:
        shares: planned share of each hour's load per site, shape (sites, hours); columns sum
            to 1 where the hour has load (``Allocation.site_shares()``).
        site_of: site index of each device name; devices not in the plan score last.
        start: the plan's hour 0 (timezone-aware UTC).
    """

    name = "optimal"

    def __init__(self, shares: NDArray[np.float64], site_of: Mapping[str, int],
                 start: datetime) -> None:
        self.shares = shares
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
        """Minus the site's deficit in batches, plus a sub-unit tie-break by finish time."""
        hour = self._current_hour()
        planned = self.shares[:, hour] * (self._sent.sum() + 1.0)
        deficit = planned - self._sent
        latest = max((o.finish_s for o in candidates), default=0.0) + 1.0
        scores = []
        for o in candidates:
            site = self.site_of.get(o.device.name)
            behind = float(deficit[site]) if site is not None else -1e9
            scores.append(-behind + 1e-3 * o.finish_s / latest)
        return scores

    def chose(self, option: DeviceOption) -> None:
        """Count the batch against its site's share of this hour."""
        site = self.site_of.get(option.device.name)
        if site is not None:
            self._current_hour()
            self._sent[site] += 1.0
