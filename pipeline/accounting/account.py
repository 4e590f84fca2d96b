"""Sustainability accounting: operational and embodied carbon, water and cost of a batch.

Formulas (``energy_kwh`` is the IT energy, ``(energy_j + host_energy_j) / 3.6e6``: the device's
measured or estimated energy plus, for a GPU, its host's share, kept apart in the rows):

- operational carbon_g = energy_kwh x PUE(ambient) x grid intensity (gCO2e/kWh), the intensity
  being the device's fixed ``intensity_g_per_kwh`` where the registry sets one;
- embodied carbon_g = embodied_kgco2e x 1000 x busy_s / lifetime_s (linear amortisation; the
  device's figure or the sum of its parts', see :mod:`pipeline.accounting.embodied`);
- water_l = energy_kwh x (site WUE + PUE x grid water intensity), i.e. on-site cooling water
  plus the water consumed generating the facility's electricity;
- cost_usd = energy_kwh x PUE x price (USD/kWh), None where the zone has no price data.

A batch's totals are apportioned to its prompts by tokens with :func:`apportion`, so the prompt
rows of a batch add up to the batch totals exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from itertools import pairwise
from typing import Final

from pipeline.accounting.embodied import device_embodied_kgco2e
from pipeline.accounting.site import model
from pipeline.fleet.devices import Device
from pipeline.grid.trace import GridConditions, device_conditions
from pipeline.ledger.rows import PromptFigures as PromptAccount

JOULES_PER_KWH: Final = 3.6e6
SECONDS_PER_YEAR: Final = 365.25 * 86400

# Water consumed by electricity generation, litres per kWh delivered. These are estimates, not
# measurements: 1.8 L/kWh is an order-of-magnitude world-average figure for the consumptive
# water footprint of grid electricity, used for zones without a better factor. US-CAL-CISO uses
# the US national average of 3.14 L/kWh that Li et al., "Making AI Less Thirsty" (2023,
# arXiv:2304.03271) take for the electricity water intensity factor (EWIF). Per-country factors
# are published by WRI (Reig et al., "Guidance for calculating water use embedded in purchased
# electricity", 2020) and should replace these when a zone matters.
DEFAULT_GRID_WATER_L_PER_KWH: Final = 1.8
GRID_WATER_L_PER_KWH: Final[dict[str, float]] = {
    "AU-NSW": DEFAULT_GRID_WATER_L_PER_KWH,
    "AU-VIC": DEFAULT_GRID_WATER_L_PER_KWH,
    "DE-LU": DEFAULT_GRID_WATER_L_PER_KWH,
    "GB": DEFAULT_GRID_WATER_L_PER_KWH,
    "US-CAL-CISO": 3.14,
}


def interpolate_clamped(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear ``y(x)`` through ``(x, y)`` points, constant beyond the end points.

    Raises:
        ValueError: no points.
    """
    if not points:
        raise ValueError("need at least one (x, y) point")
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in pairwise(pts):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def _site_value(kind: str, fixed: float, curve: Sequence[tuple[float, float]] | None,
                model_name: str | None, ambient_c: float | None) -> float:
    """A curve over temperature wins, then a named model, then the fixed figure (also where the
    temperature is unknown)."""
    if ambient_c is None:
        return fixed
    if curve:
        return interpolate_clamped(curve, ambient_c)
    if model_name:
        return model(kind, model_name).at(ambient_c)
    return fixed


def pue_at(device: Device, ambient_c: float | None) -> float:
    """Site PUE at ``ambient_c``: the device's ``pue_curve``, else its ``pue_model`` (see
    :mod:`pipeline.accounting.site`), else its fixed ``pue``."""
    return _site_value("pue", device.pue, device.pue_curve, device.pue_model, ambient_c)


def wue_l_per_kwh_at(device: Device, ambient_c: float | None) -> float:
    """The site's WUE (litres per kWh of IT energy) at ``ambient_c``: ``wue_curve``, else
    ``wue_model``, else the fixed ``wue_l_per_kwh``."""
    return _site_value("wue", device.wue_l_per_kwh, device.wue_curve, device.wue_model, ambient_c)


def grid_water_l_per_kwh(zone: str | None) -> float:
    """Estimated water consumed per kWh generated in ``zone`` (see GRID_WATER_L_PER_KWH); the
    world-average estimate for a zone without a factor, or none."""
    return GRID_WATER_L_PER_KWH.get(zone or "", DEFAULT_GRID_WATER_L_PER_KWH)


def operational_carbon_g(energy_j: float, pue: float, intensity_g_per_kwh: float) -> float:
    """gCO2e of ``energy_j`` of IT energy at a site of ``pue`` on a grid of the given intensity."""
    return energy_j / JOULES_PER_KWH * pue * intensity_g_per_kwh


def embodied_carbon_g(embodied_kgco2e: float, busy_s: float, lifetime_years: float) -> float:
    """The share of a device's embodied gCO2e that ``busy_s`` of its lifetime carries."""
    return embodied_kgco2e * 1000.0 * busy_s / (lifetime_years * SECONDS_PER_YEAR)


def water_l(energy_j: float, wue_l_per_kwh: float, pue: float,
            grid_water_l_per_kwh: float) -> float:
    """Litres of water: on-site (WUE) plus off-site for generating the facility's energy."""
    return energy_j / JOULES_PER_KWH * (wue_l_per_kwh + pue * grid_water_l_per_kwh)


def cost_usd(energy_j: float, pue: float, price_usd_per_kwh: float | None) -> float | None:
    """USD paid for the facility energy of ``energy_j`` of IT energy; None without a price."""
    if price_usd_per_kwh is None:
        return None
    return energy_j / JOULES_PER_KWH * pue * price_usd_per_kwh


def apportion(total: float, weights: Sequence[float]) -> list[float]:
    """Split ``total`` in proportion to ``weights`` so that the parts add up to it exactly.

    Every part is a whole multiple of ``ulp(total)``, so each partial sum is exactly
    representable and the parts add up to ``total`` bit for bit in any order (``sum``,
    ``math.fsum`` or a database ``SUM``). The rounding residue, at most one unit in the last
    place per part, goes to the parts with the largest remainders, so a zero weight gets exactly
    zero. All-zero weights split evenly.

    Raises:
        ValueError: no weights, a negative or non-finite weight, or a non-finite total.
    """
    if not weights:
        raise ValueError("need at least one weight")
    if not math.isfinite(total) or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"need finite weights >= 0 and a finite total: {total}, {weights}")
    fractions = [Fraction(w) for w in weights]
    if sum(fractions) == 0:
        fractions = [Fraction(1)] * len(weights)
    if total == 0:
        return [0.0] * len(weights)
    unit = math.ulp(abs(total))
    units = _largest_remainder(round(abs(total) / unit), fractions)  # abs(total)/unit is exact
    sign = 1.0 if total > 0 else -1.0
    return [sign * (n * unit) if n else 0.0 for n in units]


def _largest_remainder(count: int, weights: list[Fraction]) -> list[int]:
    whole = sum(weights)
    exact = [count * w / whole for w in weights]
    parts = [math.floor(e) for e in exact]
    left = count - sum(parts)
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts


@dataclass(frozen=True)
class BatchAccount:
    """Energy, carbon, water and cost of one batch, with the conditions they were computed at.

    Attributes:
        device: device name.
        zone: grid zone; None for a device with only a fixed intensity.
        at: when the batch started (UTC); the hour whose grid conditions apply.
        energy_j: measured (or estimated) IT energy of the device.
        host_energy_j: the host's share for a GPU device, None where not metered; carbon,
            water and cost are computed on ``energy_j + host_energy_j``.
        duration_s: wall time the device was busy with the batch.
        ambient_c: site temperature at ``at``; None where unknown.
        pue: PUE at ``ambient_c``.
        wue_l_per_kwh: site WUE at ``ambient_c``.
        grid_water_l_per_kwh: estimated water of the zone's electricity.
        intensity_g_per_kwh: grid carbon intensity at ``at``.
        price_usd_per_kwh: electricity price at ``at``, None without price data.
        carbon_g: operational gCO2e.
        embodied_carbon_g: embodied gCO2e amortised over ``duration_s``.
        water_l: litres of water, on-site plus off-site.
        cost_usd: electricity cost, None without price data.
        intensity_signal: which intensity ``intensity_g_per_kwh`` is, e.g.
            ``average-lifecycle:electricitymaps-trace`` or ``marginal:watttime`` (see
            :mod:`pipeline.grid.signal`); None where the source does not say.
    """

    device: str
    zone: str | None
    at: datetime
    energy_j: float
    host_energy_j: float | None
    duration_s: float
    ambient_c: float | None
    pue: float
    wue_l_per_kwh: float
    grid_water_l_per_kwh: float
    intensity_g_per_kwh: float
    price_usd_per_kwh: float | None
    carbon_g: float
    embodied_carbon_g: float
    water_l: float
    cost_usd: float | None
    intensity_signal: str | None = None

    @property
    def it_energy_j(self) -> float:
        """Device plus host joules, the energy carbon, water and cost are computed on."""
        return self.energy_j + (self.host_energy_j or 0.0)

    @classmethod
    def compute(cls, grid: GridConditions, device: Device, energy_j: float, duration_s: float,
                at: datetime, *, host_energy_j: float | None = None) -> BatchAccount:
        """Account a batch of ``energy_j`` over ``duration_s`` that started at ``at``, at the
        device's grid conditions (:func:`~pipeline.grid.trace.device_conditions`, the function the
        router prices with).

        Args:
            grid: carbon, price and temperature by zone and hour (e.g. ``GridData``).
            device: the device the batch ran on (zone or fixed intensity, PUE, WUE, embodied
                carbon, lifetime).
            energy_j: the device's energy for the batch.
            duration_s: how long the device was busy with it.
            at: timezone-aware start of the batch.
            host_energy_j: the host's share of a GPU batch, if metered.

        Raises:
            ConfigError: the zone has no grid data, or the device names an unknown model or part.
        """
        cond = device_conditions(grid, device, at)
        pue = pue_at(device, cond.temperature_c)
        wue = wue_l_per_kwh_at(device, cond.temperature_c)
        grid_water = grid_water_l_per_kwh(device.zone)
        it_j = energy_j + (host_energy_j or 0.0)
        return cls(
            device=device.name, zone=device.zone, at=at, energy_j=energy_j,
            host_energy_j=host_energy_j, duration_s=duration_s, ambient_c=cond.temperature_c,
            pue=pue, wue_l_per_kwh=wue, grid_water_l_per_kwh=grid_water,
            intensity_g_per_kwh=cond.intensity_g_per_kwh,
            price_usd_per_kwh=cond.price_usd_per_kwh,
            carbon_g=operational_carbon_g(it_j, pue, cond.intensity_g_per_kwh),
            embodied_carbon_g=embodied_carbon_g(device_embodied_kgco2e(device), duration_s,
                                                device.lifetime_years),
            water_l=water_l(it_j, wue, pue, grid_water),
            cost_usd=cost_usd(it_j, pue, cond.price_usd_per_kwh),
            intensity_signal=cond.intensity_signal,
        )

    def split(self, tokens: Sequence[float]) -> list[PromptAccount]:
        """Per-prompt rows, apportioned by ``tokens`` (prompt + completion tokens of each).

        Each column of the rows sums exactly to the batch total (see :func:`apportion`).
        """
        energy = apportion(self.energy_j, tokens)
        host = _apportion_optional(self.host_energy_j, tokens)
        carbon = apportion(self.carbon_g, tokens)
        embodied = apportion(self.embodied_carbon_g, tokens)
        water = apportion(self.water_l, tokens)
        cost = _apportion_optional(self.cost_usd, tokens)
        return [
            PromptAccount(energy_j=e, host_energy_j=h, carbon_g=c, embodied_carbon_g=b,
                          water_l=w, cost_usd=u, intensity_g_per_kwh=self.intensity_g_per_kwh,
                          intensity_signal=self.intensity_signal)
            for e, h, c, b, w, u in zip(energy, host, carbon, embodied, water, cost, strict=True)
        ]


def _apportion_optional(total: float | None, tokens: Sequence[float]) -> list[float | None]:
    if total is None:
        return [None] * len(tokens)
    return list(apportion(total, tokens))


def account_batch(grid: GridConditions, device: Device, energy_j: float, duration_s: float,
                  at: datetime, tokens: Sequence[float], *,
                  host_energy_j: float | None = None) -> list[PromptAccount]:
    """Per-prompt accounting rows of a batch; shorthand for ``BatchAccount.compute(...).split``.

    Args:
        grid: carbon, price and temperature by zone and hour.
        device: the device the batch ran on.
        energy_j: the device's energy for the whole batch.
        duration_s: how long the device was busy with it.
        at: timezone-aware start of the batch.
        tokens: prompt + completion tokens of each prompt, in batch order.
        host_energy_j: the host's share of a GPU batch, if metered.
    """
    account = BatchAccount.compute(grid, device, energy_j, duration_s, at,
                                   host_energy_j=host_energy_j)
    return account.split(tokens)
