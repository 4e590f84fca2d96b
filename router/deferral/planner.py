"""Plan a deferred job: the start time and devices with the least forecast carbon by its deadline.

The job's work is estimated from the predictor: ``n_batches`` batches of the job's average
shape, each taking ``latency_s`` and ``energy_j`` on a device. A set of devices shares the
batches in proportion to their speed so that all finish together. For each device set and start
time ``t`` the forecast carbon is::

    sum over devices d of  energy_d x PUE_d x mean forecast intensity of d's zone over [t, t+D)

Intensity is constant within each forecast hour, so carbon is piecewise linear in ``t`` and its
minimum over ``[now, deadline - D]`` lies at a breakpoint: ``now``, ``deadline - D``, an hour
boundary, or an hour boundary minus ``D``. Evaluating exactly those starts finds the optimum of
the forecast (a brute-force search over the same forecast agrees; see the tests).

The current hour is not forecast: given the router's grid (``current``), its intensity is the
one the router routes and the workers account at now (the live API, the pinned or the packaged
trace), so "starting now" is priced at what running now really costs, and only later hours at
the forecast.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from typing import Protocol

from pipeline.accounting.account import operational_carbon_g
from pipeline.errors import ConfigError, EcobatchError, UnroutableError
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import CarbonSource
from router.predict.predictor import BatchShape, Predictor

HOUR = timedelta(hours=1)
MAX_FORECAST_H = 72  # what forecast APIs and the offline forecast provide; later starts wait
MAX_SUBSET_DEVICES = 8  # up to 255 device sets; beyond, single devices and all of them


class Forecast(Protocol):
    """Forecast grid intensity of a zone, hour by hour."""

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """(start of hour UTC, gCO2e/kWh) for ``hours`` hours from the hour holding ``start``."""
        ...


@dataclass(frozen=True)
class JobWork:
    """What a deferred job still has to do."""

    n_prompts: int
    prompt_tokens: int
    max_new_tokens: int


@dataclass(frozen=True)
class Plan:
    """A chosen window and device set, with forecast carbon for it and for starting now."""

    start_at: datetime
    end_at: datetime
    devices: tuple[str, ...]
    energy_j: float
    carbon_g: float
    carbon_now_g: float
    forecast_digest: str
    note: str = ""

    @property
    def saving_g(self) -> float:
        """Forecast gCO2e saved against starting now on the same devices."""
        return self.carbon_now_g - self.carbon_g


@dataclass(frozen=True)
class _DeviceRate:
    device: Device
    batch_s: float
    batch_j: float


def device_forecast(forecast: Forecast, device: Device, start: datetime,
                    hours: int) -> list[float]:
    """``device``'s forecast gCO2e/kWh, hour by hour from the hour holding ``start``: its fixed
    ``intensity_g_per_kwh`` where the registry sets one (as in
    :func:`pipeline.grid.trace.device_conditions`), else its zone's forecast.

    Raises:
        EcobatchError: the zone's forecast failed.
    """
    if device.intensity_g_per_kwh is not None:
        return [device.intensity_g_per_kwh] * hours
    if device.zone is None:  # the registry refuses such a device; kept for a hand-made one
        raise ConfigError(f"device {device.name!r} has neither a zone nor a fixed intensity")
    return [g for _, g in forecast.forecast(device.zone, start, hours)]


def _with_current(hourly: list[float], device: Device, start: datetime,
                  current: CarbonSource | None) -> list[float]:
    """``hourly`` with its first hour (the one holding ``start``) priced at ``current``, the
    intensity the router and the ledger use now, for a device priced by its zone."""
    if current is not None and device.intensity_g_per_kwh is None and device.zone is not None:
        hourly[0] = current.intensity_g_per_kwh(device.zone, start)
    return hourly


class _Intensity:
    """Mean forecast intensity of each device over any interval inside the horizon, with the
    hour holding ``start`` taken from ``current`` (the router's grid) where given; a device
    whose forecast fails is recorded in ``failed`` and left out of the plan."""

    def __init__(self, forecast: Forecast, devices: Sequence[Device], start: datetime,
                 hours: int, current: CarbonSource | None = None) -> None:
        self.origin = start.replace(minute=0, second=0, microsecond=0)
        self.hourly: dict[str, list[float]] = {}
        self.failed: dict[str, str] = {}
        for d in devices:
            try:
                self.hourly[d.name] = _with_current(device_forecast(forecast, d, self.origin, hours),
                                                    d, start, current)
            except EcobatchError as e:
                self.failed[d.name] = str(e)

    def mean(self, device: str, t0: datetime, t1: datetime) -> float:
        hourly = self.hourly[device]
        a = (t0 - self.origin) / HOUR
        b = (t1 - self.origin) / HOUR
        if b <= a:
            return hourly[min(int(a), len(hourly) - 1)]
        total, h = 0.0, math.floor(a)
        while h < b:
            lo, hi = max(a, h), min(b, h + 1)
            total += (hi - lo) * hourly[min(h, len(hourly) - 1)]
            h += 1
        return total / (b - a)

    def digest(self) -> str:
        raw = repr(sorted((z, [round(g, 3) for g in v]) for z, v in self.hourly.items()))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def plan_job(work: JobWork, registry: Registry, predictor: Predictor, forecast: Forecast,
             batch_size: int, now: datetime, deadline: datetime,
             current: CarbonSource | None = None) -> Plan:
    """The least-carbon start and device set finishing by ``deadline``, per the forecast.

    A job that cannot finish by ``deadline`` even starting now on the fastest set is planned
    to start now, with a ``note`` saying so. Starts are looked for within the forecast's
    horizon (:data:`MAX_FORECAST_H`); a job due later is re-planned as the horizon moves on.
    A device without a forecast is left out, and the ``note`` says why. ``current`` (the
    router's grid) gives the intensity of the hour holding ``now``.

    Raises:
        UnroutableError: no device can take the job's batches or has a forecast.
    """
    rates = _rates(work, registry, predictor, batch_size)
    n_batches = math.ceil(work.n_prompts / batch_size)
    horizon_h = min(MAX_FORECAST_H - 1, max(1, math.ceil((max(deadline, now) - now) / HOUR) + 2))
    longest = max((_duration((r,), n_batches) for r in rates), default=timedelta(0))
    intensity = _Intensity(forecast, [r.device for r in rates], now,
                           min(MAX_FORECAST_H, horizon_h + math.ceil(longest / HOUR) + 1),
                           current)
    sets = _device_sets([r for r in rates if r.device.name not in intensity.failed])
    if not sets:
        raise UnroutableError("no device can plan this job: " + _left_out(intensity)
                              if intensity.failed else "no device takes batches of this size")
    best: tuple[float, datetime, tuple[_DeviceRate, ...]] | None = None
    for devs in sets:
        duration = _duration(devs, n_batches)
        for t in _starts(now, deadline, duration, intensity.origin, horizon_h):
            g = _carbon(devs, n_batches, t, duration, intensity)
            if best is None or (g, t) < (best[0], best[1]):
                best = (g, t, devs)
    if best is None:
        return _late_plan(sets, n_batches, now, deadline, intensity)
    return _make_plan(best[2], n_batches, best[1], intensity, now, _left_out(intensity))


def _left_out(intensity: _Intensity) -> str:
    return "; ".join(f"{name} left out (no forecast: {why})"
                     for name, why in sorted(intensity.failed.items()))


def _rates(work: JobWork, registry: Registry, predictor: Predictor,
           batch_size: int) -> list[_DeviceRate]:
    per = max(1, min(batch_size, work.n_prompts))
    shape = BatchShape(per, round(work.prompt_tokens * per / max(1, work.n_prompts)),
                       round(work.max_new_tokens * per / max(1, work.n_prompts)))
    out = []
    for d in registry.devices:
        if d.max_batch_size >= per:
            p = predictor.predict(d, shape)
            out.append(_DeviceRate(d, p.latency_s, p.energy_j))
    return out


def _device_sets(rates: list[_DeviceRate]) -> list[tuple[_DeviceRate, ...]]:
    if len(rates) <= MAX_SUBSET_DEVICES:
        return [c for k in range(1, len(rates) + 1) for c in combinations(rates, k)]
    return [(r,) for r in rates] + [tuple(rates)]


def _duration(devs: Sequence[_DeviceRate], n_batches: int) -> timedelta:
    return timedelta(seconds=n_batches / sum(1.0 / r.batch_s for r in devs))


def _starts(now: datetime, deadline: datetime, duration: timedelta, origin: datetime,
            horizon_h: int) -> list[datetime]:
    latest = deadline - duration
    if latest < now:
        return []
    bounds = [origin + k * HOUR for k in range(horizon_h + 1)]
    cands = {now, latest, *bounds, *(b - duration for b in bounds)}
    return sorted(t for t in cands if now <= t <= latest)


def _energy_by_device(devs: Sequence[_DeviceRate], n_batches: int,
                      duration: timedelta) -> list[float]:
    return [r.batch_j * duration.total_seconds() / r.batch_s for r in devs] if n_batches else []


def _carbon(devs: Sequence[_DeviceRate], n_batches: int, t: datetime, duration: timedelta,
            intensity: _Intensity) -> float:
    return sum(operational_carbon_g(e, r.device.pue, intensity.mean(r.device.name, t, t + duration))
               for r, e in zip(devs, _energy_by_device(devs, n_batches, duration), strict=True))


def _make_plan(devs: Sequence[_DeviceRate], n_batches: int, start: datetime,
               intensity: _Intensity, now: datetime, note: str = "") -> Plan:
    duration = _duration(devs, n_batches)
    return Plan(
        start_at=start, end_at=start + duration, devices=tuple(r.device.name for r in devs),
        energy_j=sum(_energy_by_device(devs, n_batches, duration)),
        carbon_g=_carbon(devs, n_batches, start, duration, intensity),
        carbon_now_g=_carbon(devs, n_batches, now, duration, intensity),
        forecast_digest=intensity.digest(), note=note,
    )


def _late_plan(sets: list[tuple[_DeviceRate, ...]], n_batches: int, now: datetime,
               deadline: datetime, intensity: _Intensity) -> Plan:
    fastest = min(sets, key=lambda s: _duration(s, n_batches))
    done = now + _duration(fastest, n_batches)
    note = (f"cannot finish by the deadline {deadline:%Y-%m-%dT%H:%MZ} (predicted "
            f"{done:%Y-%m-%dT%H:%MZ} on the fastest devices); released at once")
    return _make_plan(fastest, n_batches, now, intensity, now,
                      "; ".join(n for n in (note, _left_out(intensity)) if n))
