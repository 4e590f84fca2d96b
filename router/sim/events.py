"""The discrete-event loop: arrivals -> the live batching rule -> the live decision -> devices.

Every routing step is the live router's own code: :func:`router.live.batching.plan_take` and
:func:`~router.live.batching.cut_batches` decide what to take from the pending list at each router
tick (whole batches at once, a partial batch after ``max_wait_s``; see
:mod:`router.sim.batches`, which cuts them once for every strategy), the options are the live
:func:`router.scoring.options.options_for` priced once per class of identical devices
(:class:`router.scoring.classoptions.DeviceClasses`), and :func:`router.scoring.decide.decide` applies the
strategy with the hard limits (memory, the SLO counted from each batch's oldest arrival). Each
batch's energy, carbon, water and cost
come from :class:`pipeline.accounting.account.BatchAccount`, as on a worker.

What is simulated: a device serves its queue first in, first out, one batch at a time, for the
predicted latency and power (the prediction is the ground truth here: there is no noise). The
router runs every ``router_interval_s``; ticks where nothing can happen are skipped, which is
exact because nothing changes between them. A batch no device may take (too big for every
device's memory) is counted as missed with the reason, so every request ends either served
once or missed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from pipeline.accounting.account import BatchAccount
from pipeline.errors import ConfigError, UnroutableError
from pipeline.fleet.devices import Registry
from pipeline.grid.trace import GridConditions
from router.config import RouterConfig
from router.live.batching import effective_batch_size
from router.predict.predictor import BatchShape
from router.scoring.classoptions import DeviceClasses
from router.scoring.decide import decide
from router.scoring.options import GridNow, grid_now
from router.scoring.strategies import Strategy
from router.sim.arrivals import Arrivals
from router.sim.batches import BatchTrace, cut_trace
from router.sim.fleet import Fleet


@runtime_checkable
class Clocked(Protocol):
    """A strategy that needs the simulated clock (e.g. one following an hourly plan)."""

    def advance_to(self, at: datetime) -> None:
        """Called before each routing tick with the simulated time (timezone-aware UTC)."""
        ...


@dataclass
class BatchLog:
    """Per-batch records, one list entry per dispatched batch."""

    dispatch_s: list[float] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)
    device: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    carbon_g: list[float] = field(default_factory=list)
    embodied_g: list[float] = field(default_factory=list)
    water_l: list[float] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)  # NaN where the zone has no price

    def add(self, start_s: float, device: int, size: int, acc: BatchAccount, *,
            dispatch_s: float) -> None:
        """Record one batch, routed at ``dispatch_s`` and started at ``start_s``."""
        self.dispatch_s.append(dispatch_s)
        self.start_s.append(start_s)
        self.device.append(device)
        self.size.append(size)
        self.duration_s.append(acc.duration_s)
        self.energy_j.append(acc.energy_j)
        self.carbon_g.append(acc.carbon_g)
        self.embodied_g.append(acc.embodied_carbon_g)
        self.water_l.append(acc.water_l)
        self.cost_usd.append(math.nan if acc.cost_usd is None else acc.cost_usd)


@dataclass
class SimOutcome:
    """What one simulation run produced, before any summary.

    Attributes:
        strategy: the strategy's name.
        start: simulated time zero (UTC).
        devices: device names, indexed by ``device_of`` and ``batches.device``.
        arrival_s: arrival time of each request.
        finish_s: finish time of each request; NaN when it was missed.
        device_of: device index of each request; -1 when missed.
        batches: the per-batch records.
        missed: missed requests by reason.
        wall_s: wall-clock seconds the run took.
    """

    strategy: str
    start: datetime
    devices: list[str]
    arrival_s: NDArray[np.float64]
    finish_s: NDArray[np.float64]
    device_of: NDArray[np.int32]
    batches: BatchLog
    missed: dict[str, int]
    wall_s: float = 0.0


class _Loop:
    """State of one run: device clocks, zone conditions per hour, and the outputs."""

    def __init__(self, fleet: Fleet, arrivals: Arrivals, grid: GridConditions,
                 strategy: Strategy, config: RouterConfig, start: datetime) -> None:
        self.fleet, self.grid, self.strategy, self.config = fleet, grid, strategy, config
        self.start = start
        self.devices = list(fleet.registry.devices)
        self.index = {d.name: k for k, d in enumerate(self.devices)}
        self.classes = DeviceClasses.of([c.members for c in fleet.classes])
        self.memory_need = fleet.memory_need()
        self.free_at = [0.0] * len(self.devices)
        self.grid_by_hour: dict[int, GridNow] = {}
        n = len(arrivals)
        self.finish = np.full(n, np.nan)
        self.device_of = np.full(n, -1, dtype=np.int32)
        self.log = BatchLog()
        self.missed: dict[str, int] = {}

    def grid_now(self, t_s: float) -> GridNow:
        """Each device class's grid conditions in the hour of ``t_s``, read once per hour.

        Raises:
            ConfigError: a device's grid data fails for that hour: a simulation over data it
                does not have would mean nothing.
        """
        hour = int(t_s // 3600)
        read = self.grid_by_hour.get(hour)
        if read is not None:
            return read
        at = self.start + timedelta(hours=hour)
        read = grid_now(self.grid, self.classes.reps.devices, at)
        if read.failed:
            raise ConfigError(f"no grid data at {at:%Y-%m-%dT%H:%MZ} for " + "; ".join(
                f"{name}: {why}" for name, why in read.failed.items()))
        self.grid_by_hour[hour] = read
        return read

    def place(self, trace: BatchTrace, j: int) -> None:
        """Decide a device for batch ``j`` of ``trace`` at its tick and run it there."""
        t_s = float(trace.dispatch_s[j])
        size = int(trace.size[j])
        shape = BatchShape(size, int(trace.prompt_tokens[j]), int(trace.new_tokens[j]))
        free_at = self.free_at
        backlog = {d.name: max(0.0, free_at[k] - t_s) for k, d in enumerate(self.devices)}
        options = self.classes.options(shape, self.fleet.predictor, self.grid_now(t_s), backlog,
                                       memory_need=self.memory_need)
        try:
            option = decide(self.strategy, options, self.config.slo_s,
                            float(trace.waited_s[j])).option
        except UnroutableError as e:
            reason = str(e).split(":")[0]
            self.missed[reason] = self.missed.get(reason, 0) + size
            return
        k = self.index[option.device.name]
        begin_s = max(t_s, free_at[k])
        duration_s = option.prediction.latency_s
        free_at[k] = begin_s + duration_s
        acc = BatchAccount.compute(self.grid, option.device, option.prediction.energy_j,
                                   duration_s, self.start + timedelta(seconds=begin_s))
        self.log.add(begin_s, k, size, acc, dispatch_s=t_s)
        first = int(trace.first[j])
        self.finish[first : first + size] = begin_s + duration_s
        self.device_of[first : first + size] = k


def batch_trace(arrivals: Arrivals, config: RouterConfig, registry: Registry) -> BatchTrace:
    """The batches the router cuts from ``arrivals`` with ``config`` (whatever the strategy)."""
    return cut_trace(arrivals, effective_batch_size(config.batch_size, registry), config.max_wait_s,
                     config.router_interval_s)


def simulate(fleet: Fleet, arrivals: Arrivals, grid: GridConditions, strategy: Strategy,
             config: RouterConfig, start: datetime, trace: BatchTrace | None = None) -> SimOutcome:
    """Run ``arrivals`` through the router's batching and ``strategy`` on ``fleet``.

    Args:
        fleet: devices, predictor and device classes.
        arrivals: the requests, times relative to ``start``.
        grid: carbon, price and temperature by zone and hour.
        strategy: a fresh strategy instance (stateful ones carry state through the run).
        config: batch size, max wait, router interval, SLO.
        start: simulated time zero, timezone-aware UTC.
        trace: the batches of ``arrivals`` (:func:`batch_trace`), when already cut.

    Raises:
        ConfigError: empty fleet, or a zone without grid data.
    """
    began = time.perf_counter()
    loop = _Loop(fleet, arrivals, grid, strategy, config, start)
    trace = trace if trace is not None else batch_trace(arrivals, config, fleet.registry)
    clocked = strategy if isinstance(strategy, Clocked) else None
    tick = math.nan
    for j in range(len(trace)):
        if clocked is not None and trace.dispatch_s[j] != tick:
            tick = float(trace.dispatch_s[j])
            clocked.advance_to(start + timedelta(seconds=tick))
        loop.place(trace, j)
    return SimOutcome(strategy.name, start, [d.name for d in loop.devices], arrivals.t_s,
                      loop.finish, loop.device_of, loop.log, loop.missed,
                      time.perf_counter() - began)
