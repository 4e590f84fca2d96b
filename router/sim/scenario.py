"""Allocation scenarios (sites x hours) built from a simulated fleet or generated for scale tests.

Per-site PUE, water and prices come from the same accounting functions and grid traces as the
live system (:func:`pipeline.accounting.account.pue_at`, ``wue_l_per_kwh_at``,
``grid_water_l_per_kwh``; :class:`pipeline.grid.trace.GridTrace`). A zone without price data is given
the dearest price of the zones that have one (missing data must never look cheap to a cost
objective), and the scenario says so in ``notes``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from pipeline.accounting.account import JOULES_PER_KWH, grid_water_l_per_kwh, pue_at, wue_l_per_kwh_at
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import GridConditions, device_conditions
from router.allocation.lp import SECONDS_PER_HOUR, Scenario
from router.predict.predictor import BatchShape, Predictor
from router.sim.arrivals import Arrivals


@dataclass(frozen=True)
class SiteSpec:
    """One site: a device type, how many, and the site's network delay and renewables."""

    name: str
    device: Device
    count: int
    tokens_per_s: float  # per device, at the batch size the router cuts at
    j_per_token: float  # IT energy per token at that batch size
    latency_s: float = 0.0
    solar_peak_kwh: float = 0.0  # on-site solar at local noon; 0 for none


def grid_arrays(sites: Sequence[SiteSpec], grid: GridConditions, start: datetime,
                hours: int) -> tuple[dict[str, NDArray[np.float64]], list[str]]:
    """PUE, intensity, price and water per kWh of each site and hour, and notes on gaps."""
    n_s = len(sites)
    out = {k: np.zeros((n_s, hours)) for k in ("pue", "intensity", "price", "water")}
    missing: set[str] = set()
    for s, site in enumerate(sites):
        zone = site.device.zone
        for h in range(hours):
            cond = device_conditions(grid, site.device, start + timedelta(hours=h))
            pue = pue_at(site.device, cond.temperature_c)
            price = cond.price_usd_per_kwh
            if price is None:
                missing.add(f"zone {zone}" if zone else f"site {site.name} (no zone)")
            out["pue"][s, h] = pue
            out["intensity"][s, h] = cond.intensity_g_per_kwh
            out["price"][s, h] = np.nan if price is None else price
            out["water"][s, h] = (wue_l_per_kwh_at(site.device, cond.temperature_c)
                                  + pue * grid_water_l_per_kwh(zone))
    priced = out["price"][~np.isnan(out["price"])]
    fill = float(priced.max()) if priced.size else 0.0
    out["price"] = np.where(np.isnan(out["price"]), fill, out["price"])
    notes = [f"{z} has no price data: priced at the dearest {fill:.4f} USD/kWh of the others"
             for z in sorted(missing)]
    return out, notes


def solar_kwh(peak_kwh: float, start: datetime, hours: int, utc_offset_h: float) -> NDArray[np.float64]:
    """A clear-sky solar shape: ``peak_kwh`` at local noon, zero from 18:00 to 06:00."""
    local_h = (start.hour + np.arange(hours) + utc_offset_h) % 24
    return peak_kwh * np.clip(np.sin((local_h - 6.0) / 12.0 * np.pi), 0.0, None)


UTC_OFFSET_H = {"AU-NSW": 10.0, "AU-VIC": 10.0, "DE-LU": 1.0, "GB": 0.0, "US-CAL-CISO": -8.0}


def build_scenario(sites: Sequence[SiteSpec], demand: NDArray[np.float64], grid: GridConditions,
                   start: datetime, *, water_budget_l: float | None = None,
                   allow_defer: bool = False) -> tuple[Scenario, list[str]]:
    """A :class:`~router.allocation.lp.Scenario` of ``sites`` over ``len(demand)`` hours."""
    hours = int(demand.shape[0])
    arr, notes = grid_arrays(sites, grid, start, hours)
    renew = np.array([solar_kwh(s.solar_peak_kwh, start, hours,
                                UTC_OFFSET_H.get(s.device.zone or "", 0.0)) for s in sites])
    sc = Scenario(
        sites=[s.name for s in sites], demand=demand.astype(np.float64),
        capacity=np.array([s.count * s.tokens_per_s * SECONDS_PER_HOUR for s in sites]),
        kwh_per_token=np.array([s.j_per_token / JOULES_PER_KWH for s in sites]),
        pue=arr["pue"], intensity_g_per_kwh=arr["intensity"], price_usd_per_kwh=arr["price"],
        water_l_per_kwh=arr["water"], latency_s=np.array([s.latency_s for s in sites]),
        renewable_kwh=renew, water_budget_l=water_budget_l, allow_defer=allow_defer)
    return sc, notes


def mean_batch(arrivals: Arrivals, batch_size: int) -> BatchShape:
    """A batch of ``batch_size`` requests of the arrivals' mean prompt and generated tokens."""
    mean_prompt = float(np.mean(arrivals.prompt_tokens)) if len(arrivals) else 0.0
    mean_new = float(np.mean(arrivals.max_tokens)) if len(arrivals) else 1.0
    return BatchShape(batch_size, round(batch_size * mean_prompt), round(batch_size * mean_new))


def device_rates(predictor: Predictor, device: Device, shape: BatchShape) -> tuple[float, float]:
    """Predicted tokens/s and IT J/token of ``device`` serving batches of ``shape``."""
    pred = predictor.predict(device, shape)
    tokens = shape.prompt_tokens + shape.max_new_tokens
    return tokens / pred.latency_s, pred.energy_j / tokens


def registry_sites(registry: Registry, predictor: Predictor, shape: BatchShape
                   ) -> tuple[list[SiteSpec], list[list[str]]]:
    """One site per grid zone and cooling (PUE, WUE) of a live registry, with its devices.

    A site's capacity is the sum of its devices' predicted rates at ``shape`` (devices whose
    ``max_batch_size`` is below the batch size add none) and its J/token their rate-weighted
    mean; PUE and WUE are those its devices share. A zone with devices of different cooling
    becomes several sites, named ``ZONE/first-device``.
    """
    groups: dict[tuple[object, ...], list[Device]] = {}
    for device in registry.devices:
        groups.setdefault(_site_key(device), []).append(device)
    per_zone = Counter(key[0] for key in groups)
    sites = []
    for key, members in groups.items():
        fits = [d for d in members if shape.batch_size <= d.max_batch_size]
        rates = [device_rates(predictor, d, shape) for d in fits]
        tokens_per_s = sum(r for r, _ in rates)
        j_per_token = sum(r * j for r, j in rates) / tokens_per_s if tokens_per_s else 0.0
        zone = members[0].grid_label
        name = zone if per_zone[key[0]] == 1 else f"{zone}/{members[0].name}"
        sites.append(SiteSpec(name, members[0], 1, tokens_per_s, j_per_token))
    return sites, [[d.name for d in members] for members in groups.values()]


def _site_key(d: Device) -> tuple[object, ...]:
    return (d.grid_label, d.pue, tuple(d.pue_curve or ()), d.pue_model, d.wue_l_per_kwh,
            tuple(d.wue_curve or ()), d.wue_model)


def hourly_tokens(arrivals: Arrivals, hours: int) -> NDArray[np.float64]:
    """Prompt plus generated tokens arriving in each hour."""
    hour = np.minimum((arrivals.t_s // SECONDS_PER_HOUR).astype(np.int64), hours - 1)
    weights = (arrivals.prompt_tokens + arrivals.max_tokens).astype(np.float64)
    return np.asarray(np.bincount(hour, weights=weights, minlength=hours)[:hours], np.float64)


ZONES = ("AU-NSW", "AU-VIC", "DE-LU", "GB", "US-CAL-CISO")


def synthetic_sites(n_sites: int, seed: int) -> list[SiteSpec]:
    """``n_sites`` sites spread over the packaged zones, with varied size, cooling and delay.

    Deterministic for a seed. Each site runs H100-class devices at nominal figures (8,000
    tokens/s and 0.09 J/token per device at a large batch, close to the ML.ENERGY Qwen3-8B
    H100 rows); PUE curves range from free-air to chiller-cooled.
    """
    rng = np.random.default_rng(seed)
    sites = []
    for i in range(n_sites):
        zone = ZONES[i % len(ZONES)]
        base = float(rng.uniform(1.08, 1.3))
        curve = [(10.0, base), (25.0, base + 0.08), (35.0, base + float(rng.uniform(0.15, 0.4)))]
        device = Device(name=f"site{i:02d}", kind="nvidia", zone=zone, tdp_w=700.0,
                        pue_curve=curve, wue_l_per_kwh=float(rng.uniform(0.0, 1.8)),
                        embodied_kgco2e=150.0, max_batch_size=256)
        sites.append(SiteSpec(device.name, device, int(rng.integers(4, 32)), 8000.0, 0.09,
                              latency_s=float(rng.uniform(0.01, 0.25)),
                              solar_peak_kwh=float(rng.choice([0.0, 5.0, 20.0]))))
    return sites
