"""Summaries of a simulation run: totals, latency percentiles, SLO misses, utilisation, series.

All figures are estimates from the predictor (nominal figures, ``ecobatch bench`` profiles or
ML.ENERGY measurements, as the fleet says), never measurements of this machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.accounting.account import JOULES_PER_KWH
from router.sim.events import SimOutcome


@dataclass(frozen=True)
class Summary:
    """One strategy's results over a run.

    Attributes:
        strategy: strategy name.
        requests: requests that arrived.
        served: requests served (each exactly once).
        missed: requests no device could take.
        batches: batches dispatched.
        energy_kwh: device (IT) energy.
        carbon_kg: operational kgCO2e (energy x PUE x grid intensity).
        embodied_kg: embodied kgCO2e amortised over busy time.
        water_l: litres, on-site plus generation.
        cost_usd: electricity cost of the batches run where the zone has prices.
        unpriced_kwh: device (IT) energy of the batches run in zones without price data,
            which ``cost_usd`` leaves out (never counted as free).
        p50_s, p95_s, p99_s: latency percentiles of served requests, arrival to finish.
        slo_s: the latency target the SLO misses count against.
        slo_misses: served requests whose time from arrival to finish (the wait to be
            batched, the device's queue and the batch itself) exceeds ``slo_s``, plus missed
            requests.
        utilisation: busy fraction per device over the run (horizon or last finish).
        wall_s: wall-clock seconds of the simulation.
    """

    strategy: str
    requests: int
    served: int
    missed: int
    batches: int
    energy_kwh: float
    carbon_kg: float
    embodied_kg: float
    water_l: float
    cost_usd: float
    unpriced_kwh: float
    p50_s: float
    p95_s: float
    p99_s: float
    slo_s: float
    slo_misses: int
    utilisation: dict[str, float]
    wall_s: float

    @property
    def mean_utilisation(self) -> float:
        """Mean busy fraction over devices."""
        return float(np.mean(list(self.utilisation.values()))) if self.utilisation else 0.0

    @property
    def priced(self) -> bool:
        """Whether any of the energy ran where prices are known (else the cost is unknown)."""
        return self.unpriced_kwh < self.energy_kwh or self.energy_kwh == 0

    def cost_text(self) -> str:
        """The cost for a table: ``no prices`` where none of the energy was priced, and a
        ``*`` where some of it ran in zones without price data (see :func:`cost_notes`)."""
        if not self.priced:
            return "no prices"
        return f"{self.cost_usd:.3f}" + ("*" if self.unpriced_kwh > 0 else "")

    def row(self) -> dict[str, Any]:
        """Flat JSON/CSV-ready figures (utilisation as its mean)."""
        return {
            "strategy": self.strategy, "requests": self.requests, "served": self.served,
            "missed": self.missed, "batches": self.batches, "energy_kwh": self.energy_kwh,
            "carbon_kg": self.carbon_kg, "embodied_kg": self.embodied_kg,
            "water_l": self.water_l, "cost_usd": self.cost_usd if self.priced else None,
            "unpriced_kwh": self.unpriced_kwh, "p50_s": self.p50_s,
            "p95_s": self.p95_s, "p99_s": self.p99_s, "slo_s": self.slo_s,
            "slo_misses": self.slo_misses, "mean_utilisation": self.mean_utilisation,
            "wall_s": self.wall_s,
        }


def cost_notes(summaries: list[Summary], unpriced_zones: list[str]) -> list[str]:
    """What the cost figures leave out: zones without price data, and each strategy's share of
    energy run there."""
    if not unpriced_zones:
        return []
    zones = ", ".join(unpriced_zones)
    if all(not s.priced for s in summaries):
        return [f"cost: no zone of the fleet has price data ({zones}); no cost is shown"]
    shares = ", ".join(f"{s.strategy} {s.unpriced_kwh / s.energy_kwh:.1%}"
                       for s in summaries if s.unpriced_kwh > 0 and s.energy_kwh > 0)
    notes = [f"cost: {zones} without price data; * marks a cost that leaves out the energy "
             f"run there"]
    return notes + ([f"cost: energy left out: {shares}"] if shares else [])


def _arr(values: list[float]) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def summarise(out: SimOutcome, slo_s: float, horizon_s: float) -> Summary:
    """Totals, percentiles, SLO misses and utilisation of one run."""
    served = ~np.isnan(out.finish_s)
    latency = out.finish_s[served] - out.arrival_s[served]
    pct = np.percentile(latency, [50, 95, 99]) if latency.size else np.full(3, math.nan)
    b = out.batches
    duration = _arr(b.duration_s)
    end_s = max(horizon_s, float(np.nanmax(out.finish_s)) if served.any() else 0.0)
    busy = np.bincount(np.asarray(b.device, dtype=np.int64), weights=duration,
                       minlength=len(out.devices))
    n_missed = int((~served).sum())
    cost = _arr(b.cost_usd)
    return Summary(
        strategy=out.strategy, requests=int(out.arrival_s.size), served=int(served.sum()),
        missed=n_missed, batches=len(b.start_s),
        energy_kwh=float(_arr(b.energy_j).sum()) / JOULES_PER_KWH,
        carbon_kg=float(_arr(b.carbon_g).sum()) / 1000.0,
        embodied_kg=float(_arr(b.embodied_g).sum()) / 1000.0,
        water_l=float(_arr(b.water_l).sum()),
        cost_usd=float(np.nansum(cost)),
        unpriced_kwh=float(_arr(b.energy_j)[np.isnan(cost)].sum()) / JOULES_PER_KWH,
        p50_s=float(pct[0]), p95_s=float(pct[1]), p99_s=float(pct[2]), slo_s=slo_s,
        slo_misses=int((latency > slo_s).sum()) + n_missed,
        utilisation={name: float(busy[k] / end_s) if end_s > 0 else 0.0
                     for k, name in enumerate(out.devices)},
        wall_s=out.wall_s,
    )


@dataclass(frozen=True)
class Series:
    """Hourly series of one run, hour 0 being the simulation start."""

    strategy: str
    carbon_kg: NDArray[np.float64]  # operational, by the hour a batch started
    p95_s: NDArray[np.float64]  # latency of requests by the hour they arrived; NaN if none


def hourly(out: SimOutcome, hours: int) -> Series:
    """Operational carbon and p95 latency per simulated hour (later work goes to the last)."""
    start_h = np.minimum((_arr(out.batches.start_s) // 3600).astype(np.int64), hours - 1)
    carbon = np.bincount(start_h, weights=_arr(out.batches.carbon_g), minlength=hours) / 1000.0
    served = ~np.isnan(out.finish_s)
    arr_h = np.minimum((out.arrival_s[served] // 3600).astype(np.int64), hours - 1)
    latency = out.finish_s[served] - out.arrival_s[served]
    p95 = np.full(hours, np.nan)
    order = np.argsort(arr_h, kind="stable")
    bounds = np.searchsorted(arr_h[order], np.arange(hours + 1))
    for h in range(hours):
        chunk = latency[order[bounds[h] : bounds[h + 1]]]
        if chunk.size:
            p95[h] = np.percentile(chunk, 95)
    return Series(out.strategy, carbon[:hours], p95)
