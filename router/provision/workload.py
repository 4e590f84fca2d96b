"""The inputs of the provisioning MILP: a representative day of load, grid and device rates.

- Load: the request trace (:mod:`router.sim.arrivals`) over 24 hours, in tokens (prompt plus
  generated) per hour, split into an online share (served in its hour, within the SLO) and an
  offline batch share (served within ``deadline_h`` of arriving). The same day repeats every
  day of every year, scaled by ``(1 + growth_per_year) ** year``.
- Grid: each site's intensity, price, PUE (from the hour's temperature) and water per kWh,
  averaged per UTC hour of the day over the packaged year of :class:`pipeline.grid.trace.GridTrace`
  (seasons are averaged away; a zone without prices gets the mean of the others).
- Devices: tokens/s and J/token of each type at each candidate batch size, predicted by the
  simulator's predictor for a batch of the trace's mean request
  (:func:`router.sim.scenario.device_rates`), with the memory limit of the served model; the
  latency the SLO is checked against is that of a batch at the 95th percentile of token
  content (:func:`tail_batch`), since the SLO is a p95 target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine

from pipeline.accounting.account import grid_water_l_per_kwh, pue_at, wue_l_per_kwh_at
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.grid.trace import GridConditions, device_conditions
from router.predict.predictor import BatchShape
from router.provision.catalogue import DeviceType, Site, site_device
from router.sim.arrivals import Arrivals
from router.sim.fleet import DeviceClass, build_fleet
from router.sim.scenario import device_rates, hourly_tokens, mean_batch

HOURS = 24
GRID_YEAR_START = datetime(2024, 1, 1, tzinfo=UTC)
GRID_DAYS = 366


@dataclass(frozen=True)
class Workload:
    """What must be served, and the service targets.

    Attributes:
        arrivals: one day of requests (times relative to the day's start).
        offline_share: share of requests that are offline batch work.
        deadline_h: hours within which offline work must be served (1..24).
        slo_s: latency target of online requests (arrival to answer), seconds; it includes
            the wait for a batch to fill, which :meth:`fill_s` estimates.
        horizon_years: years the fleet must serve.
        growth_per_year: yearly growth of the load (0.2 = +20% a year).
        batch_sizes: candidate batch sizes.
        default_batch: the batch size used when Rightsize is off.
        block_h: hours per time slot of the program (1, 2, 3, 4, 6, 8, 12 or 24): load and
            grid are averaged over each slot, which keeps the program small.
    """

    arrivals: Arrivals
    offline_share: float
    deadline_h: int
    slo_s: float
    horizon_years: int = 4
    growth_per_year: float = 0.0
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    default_batch: int = 4
    block_h: int = 4

    @property
    def n_slots(self) -> int:
        """Time slots of the representative day."""
        return HOURS // self.block_h

    def tokens_per_h(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(online, offline) mean tokens arriving per hour in each slot of the day."""
        total = self._slot_tokens
        return total * (1.0 - self.offline_share), total * self.offline_share

    @cached_property
    def _slot_tokens(self) -> NDArray[np.float64]:
        return slot_means(hourly_tokens(self.arrivals, HOURS), self.block_h)

    @property
    def deadline_slots(self) -> int:
        """Slots within which offline work is served (its own slot counts as one; at least 1)."""
        return max(1, min(self.deadline_h // self.block_h, self.n_slots))

    def growth(self) -> NDArray[np.float64]:
        """Load multiplier of each year of the horizon."""
        return np.asarray((1.0 + self.growth_per_year) ** np.arange(self.horizon_years), np.float64)

    def fill_s(self, batch: int) -> float:
        """Seconds to collect ``batch`` online requests at the day's slowest online hour.

        The router cuts full batches only if they fill before its ``max_wait_s``; so a batch
        size is reachable online only with this wait, which counts against the SLO.
        """
        online, _ = self.tokens_per_h()
        rate_per_s = float(online.min()) / self.tokens_per_request / 3600.0
        return batch / rate_per_s if rate_per_s > 0 else float("inf")

    @cached_property
    def tokens_per_request(self) -> float:
        """Mean prompt plus generated tokens of a request."""
        return float(np.mean(self.arrivals.prompt_tokens + self.arrivals.max_tokens))


def slot_means(hourly: NDArray[np.float64], block_h: int) -> NDArray[np.float64]:
    """Mean of each ``block_h``-hour slot of a (24,) series.

    Raises:
        ConfigError: ``block_h`` does not divide 24.
    """
    if block_h < 1 or HOURS % block_h:
        raise ConfigError(f"slot length {block_h} h must divide 24")
    return np.asarray(hourly.reshape(-1, block_h).mean(axis=1), np.float64)


@dataclass(frozen=True)
class SiteGrid:
    """A site's mean conditions per slot of the day (UTC), shape (slots,) each."""

    intensity_g_per_kwh: NDArray[np.float64]
    price_usd_per_kwh: NDArray[np.float64]
    pue: NDArray[np.float64]
    water_l_per_kwh: NDArray[np.float64]  # per kWh of IT energy: WUE + PUE x grid water


def site_grids(sites: list[Site], types: list[DeviceType], grid: GridConditions,
               block_h: int = 1) -> list[SiteGrid]:
    """Each site's representative day in ``block_h``-hour slots; cooling taken from the
    first type placed there."""
    raw = [[slot_means(a, block_h) for a in _site_day(site_device(types[0], s), grid)]
           for s in sites]
    prices = np.array([r[1] for r in raw])
    known = prices[~np.isnan(prices)]
    fill = float(known.mean()) if known.size else 0.0
    return [SiteGrid(i, np.where(np.isnan(p), fill, p), pue, w) for i, p, pue, w in raw]


def _site_day(device: Device, grid: GridConditions) -> tuple[NDArray[np.float64], ...]:
    sums = np.zeros((4, HOURS))
    for d in range(GRID_DAYS):
        for h in range(HOURS):
            cond = device_conditions(grid, device, GRID_YEAR_START + timedelta(days=d, hours=h))
            pue = pue_at(device, cond.temperature_c)
            price = np.nan if cond.price_usd_per_kwh is None else cond.price_usd_per_kwh
            water = wue_l_per_kwh_at(device, cond.temperature_c)
            sums[:, h] += (cond.intensity_g_per_kwh, price, pue,
                           water + pue * grid_water_l_per_kwh(device.zone))
    return tuple(sums / GRID_DAYS)


@dataclass(frozen=True)
class BatchRate:
    """A type's predicted service at one batch size (a batch of mean requests)."""

    batch: int
    tokens_per_s: float
    j_per_token: float
    latency_s: float  # of a batch at the 95th percentile of token content (for the SLO)
    fits: bool  # within max_batch_size and the device's memory


def tail_batch(arrivals: Arrivals, batch: int, z: float = 1.645) -> BatchShape:
    """A batch of ``batch`` requests whose prompt and generated tokens are each ``z`` standard
    errors above their means (1.645: the 95th percentile of a normal sum)."""
    prompt = arrivals.prompt_tokens.astype(np.float64)
    new = arrivals.max_tokens.astype(np.float64)
    spread = z * np.sqrt(batch)
    return BatchShape(batch, round(batch * prompt.mean() + spread * prompt.std()),
                      round(batch * new.mean() + spread * new.std()))


def type_rates(t: DeviceType, work: Workload, engine: Engine | None = None) -> list[BatchRate]:
    """Predicted rates of ``t`` at every candidate batch size.

    Raises:
        ConfigError: an unknown profile or one without rows.
    """
    cls = DeviceClass((t.device,), t.profile, t.model_bytes, t.kv_bytes_per_token)
    fleet = build_fleet([cls], engine, f"device type {t.name}")
    need = fleet.memory_need()
    out = []
    for b in work.batch_sizes:
        shape = mean_batch(work.arrivals, b)
        tokens_per_s, j_per_token = device_rates(fleet.predictor, t.device, shape)
        need_bytes = need(t.device, shape) if need is not None else None
        fits = b <= t.device.max_batch_size and (need_bytes is None
                                                 or need_bytes <= t.device.memory_bytes)
        tail_s = fleet.predictor.predict(t.device, tail_batch(work.arrivals, b)).latency_s
        out.append(BatchRate(b, tokens_per_s, j_per_token, tail_s, fits))
    return out
