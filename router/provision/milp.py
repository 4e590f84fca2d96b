"""EcoServe's provisioning problem as a mixed-integer program over a representative day.

Index sets: units ``u`` (a device type at a site, new or an owned group), candidate batch
sizes ``b``, service classes ``c`` (0 online, 1 offline), slots ``h`` of the representative day
(``block_h`` hours each; rates are tokens per hour within the slot)
and years ``y`` of the horizon. Variables, all >= 0:

- ``N[u,y]`` (integer): devices of unit ``u`` in service in year ``y``; new units only grow
  (bought, kept to the horizon), owned units only shrink (retired, never back);
- ``x[u,b,c,h,y]``: tokens of class ``c`` served per hour of slot ``h`` by unit ``u`` at batch ``b``;
- ``xc[u,h,y]``: offline tokens served by the host CPUs of unit ``u`` (Reduce);
- ``q[a,k,y]``: offline tokens arriving in hour ``a`` served ``k`` hours later (k < deadline);
- ``z_on[b]`` (binary): the online batch size, one for the fleet (the router cuts one size);
  ``z_off[t,b]`` (binary): each type's offline batch size (Rightsize).

Constraints: each device's busy time (online load at ``util_online`` of its rate, offline at
``util_offline``) fits its hours; online demand is met in its slot at a batch whose p95
latency plus the wait to fill it (at the day's slowest online rate) is within the SLO; offline
demand is met within its deadline (the day wraps around: steady state); host CPUs serve at
most their rate.

Metrics (each linear, totals over the horizon, 365 days a year): IT and facility energy (a
device draws idle plus host watts while in service, and its predicted busy energy above idle
while serving), operational carbon (facility energy x the site's hourly intensity), embodied
carbon and price amortised linearly over the type's lifetime for each year in service (an
owned device past its lifetime carries none: Recycle), water, cost (electricity plus amortised
price) and the online request-seconds of latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.errors import ConfigError
from router.provision.catalogue import Catalogue, DeviceType, OwnedGroup
from router.provision.lp import Index, Rows, Space, Vector
from router.provision.metrics import metric_vectors
from router.provision.workload import BatchRate, SiteGrid, Workload

PILLARS = ("reduce", "reuse", "rightsize", "recycle")


@dataclass(frozen=True)
class Pillars:
    """Which of EcoServe's four pillars the program may use."""

    reduce: bool = True  # offline work on host CPUs; lean-host variants
    reuse: bool = True  # owned devices keep serving
    rightsize: bool = True  # batch sizes chosen (else the default batch everywhere)
    recycle: bool = True  # owned devices may outlive their lifetime up to max_lifetime_years

    def without(self, name: str) -> Pillars:
        """These pillars with ``name`` turned off."""
        return replace(self, **{name: False})


@dataclass(frozen=True)
class Unit:
    """A device type at a site: new purchases, or one owned group."""

    type_index: int
    site_index: int
    owned: OwnedGroup | None = None


@dataclass(frozen=True)
class Problem:
    """Everything the program is built from."""

    catalogue: Catalogue
    workload: Workload
    grids: list[SiteGrid]
    rates: list[list[BatchRate]]  # per type, per candidate batch
    util_online: float = 0.7  # busy share of a device serving online load (queueing headroom)
    util_offline: float = 0.95
    mip_rel_gap: float = 1e-4
    time_limit_s: float = 60.0


@dataclass
class Program:
    """The built MILP: variables, rows, metric coefficient vectors and the index blocks."""

    space: Space
    rows: Rows
    units: list[Unit]
    n: Index
    x: Index
    xc: Index
    z_on: Index
    z_off: Index
    metrics: dict[str, Vector] = field(default_factory=dict)


def units_for(problem: Problem, pillars: Pillars) -> list[Unit]:
    """New units for every type at every site it may go to, then one per owned group."""
    cat = problem.catalogue
    units = [Unit(t, s) for t, dt in enumerate(cat.types) for s, site in enumerate(cat.sites)
             if (dt.sites is None or site.name in dt.sites) and (pillars.reduce or not dt.lean)]
    site_index = {s.name: i for i, s in enumerate(cat.sites)}
    type_index = {t.name: i for i, t in enumerate(cat.types)}
    units += [Unit(type_index[g.type_name], site_index[g.site], g) for g in cat.owned]
    return units


def build(problem: Problem, pillars: Pillars) -> Program:
    """Build the program for ``problem`` with ``pillars``.

    Raises:
        ConfigError: the default batch size is not a candidate.
    """
    work = problem.workload
    check_slo_reachable(problem)
    units = units_for(problem, pillars)
    n_b, n_y = len(work.batch_sizes), work.horizon_years
    space = Space()
    prog = Program(space, Rows(), units, space.block((len(units), n_y), integer=True),
                   space.block((len(units), n_b, 2, work.n_slots, n_y)),
                   space.block((len(units), work.n_slots, n_y)),
                   space.block((n_b,), integer=True, ub=1.0),
                   space.block((len(problem.catalogue.types), n_b), integer=True, ub=1.0))
    _bound_service(problem, prog, pillars)
    _bound_fleet(problem, prog, pillars)
    _capacity_rows(problem, prog)
    _demand_rows(problem, prog)
    _batch_rows(problem, prog, pillars)
    prog.metrics = metric_vectors(problem, prog)
    return prog


def check_slo_reachable(problem: Problem) -> None:
    """Raise ConfigError naming the best reachable online latency when none meets the SLO."""
    work = problem.workload
    best = min((r.latency_s + work.fill_s(r.batch), t.name, r.batch)
               for t, rates in zip(problem.catalogue.types, problem.rates, strict=True)
               for r in rates if r.fits)
    if best[0] > work.slo_s:
        raise ConfigError(f"no device type meets the SLO of {work.slo_s:g} s: the best is "
                          f"{best[1]} at batch {best[2]}, {best[0]:.1f} s (p95 batch latency "
                          "plus the wait to fill it); raise --slo-s or add faster devices")


def _bound_service(problem: Problem, prog: Program, pillars: Pillars) -> None:
    """No service at a batch that does not fit, online none whose fill wait plus latency
    exceeds the SLO; host CPUs only
    with Reduce and where the type has any."""
    work, types = problem.workload, problem.catalogue.types
    for k, unit in enumerate(prog.units):
        t = types[unit.type_index]
        for j, rate in enumerate(problem.rates[unit.type_index]):
            if not rate.fits:
                prog.space.set_bounds(prog.x[k, j], 0.0, 0.0)
            elif rate.latency_s + work.fill_s(rate.batch) > work.slo_s:
                prog.space.set_bounds(prog.x[k, j, 0], 0.0, 0.0)
        if not pillars.reduce or t.host_cpu_tokens_per_s <= 0:
            prog.space.set_bounds(prog.xc[k], 0.0, 0.0)


def owned_years_allowed(group: OwnedGroup, t: DeviceType, years: int, pillars: Pillars) -> list[bool]:
    """Years an owned group may serve: none without Reuse; to its lifetime without Recycle,
    else to ``max_lifetime_years``."""
    if not pillars.reuse:
        return [False] * years
    limit = t.max_lifetime_years if pillars.recycle else t.lifetime_years
    return [group.age_years + y < limit for y in range(years)]


def _bound_fleet(problem: Problem, prog: Program, pillars: Pillars) -> None:
    """Owned counts within the group and the years allowed; new units only grow, owned
    only shrink."""
    years = problem.workload.horizon_years
    for k, unit in enumerate(prog.units):
        n = prog.n[k]
        if unit.owned is not None:
            t = problem.catalogue.types[unit.type_index]
            allowed = owned_years_allowed(unit.owned, t, years, pillars)
            for y in range(years):
                prog.space.set_bounds(n[y], 0.0, float(unit.owned.count) if allowed[y] else 0.0)
        for y in range(1, years):
            sign = -1.0 if unit.owned is None else 1.0
            prog.rows.add(np.array([n[y], n[y - 1]]), np.array([sign, -sign]), -np.inf, 0.0)


def _capacity_rows(problem: Problem, prog: Program) -> None:
    """Busy hours of each unit and hour within its devices' hours; host CPUs within theirs."""
    types = problem.catalogue.types
    for k, unit in enumerate(prog.units):
        rate = np.array([r.tokens_per_s for r in problem.rates[unit.type_index]]) * 3600.0
        per_token = np.stack([1.0 / (rate * problem.util_online),
                              1.0 / (rate * problem.util_offline)], axis=1)
        t = types[unit.type_index]
        cpu_tokens_h = t.host_cpu_tokens_per_s / t.gpus_per_host * 3600.0 * problem.util_offline
        for y in range(problem.workload.horizon_years):
            for h in range(problem.workload.n_slots):
                cols = np.concatenate([prog.x[k, :, :, h, y].ravel(), [prog.n[k, y]]])
                prog.rows.add(cols, np.concatenate([per_token.ravel(), [-1.0]]), -np.inf, 0.0)
                if cpu_tokens_h > 0:
                    prog.rows.add(np.array([prog.xc[k, h, y], prog.n[k, y]]),
                                  np.array([1.0, -cpu_tokens_h]), -np.inf, 0.0)


def _demand_rows(problem: Problem, prog: Program) -> None:
    """Online demand in its hour; offline demand within ``deadline_h`` (wrapping the day)."""
    work = problem.workload
    online, offline = work.tokens_per_h()
    lags, slots = work.deadline_slots, work.n_slots
    q = prog.space.block((slots, lags, work.horizon_years))
    for y, g in enumerate(work.growth()):
        for h in range(slots):
            prog.rows.add(prog.x[:, :, 0, h, y], 1.0, online[h] * g, online[h] * g)
            prog.rows.add(q[h, :, y], 1.0, offline[h] * g, offline[h] * g)
            arrivals = np.array([q[(h - k) % slots, k, y] for k in range(lags)])
            cols = np.concatenate([prog.x[:, :, 1, h, y].ravel(), prog.xc[:, h, y], arrivals])
            vals = np.concatenate([np.ones(prog.x[:, :, 1, h, y].size + prog.xc[:, h, y].size),
                                   -np.ones(lags)])
            prog.rows.add(cols, vals, 0.0, 0.0)


def _batch_rows(problem: Problem, prog: Program, pillars: Pillars) -> None:
    """One online batch size for the fleet and one offline batch size per type: tokens at a
    size only if it is chosen (big-M per slot and year: that slot's demand); without
    Rightsize both are the default."""
    work = problem.workload
    online, offline = work.tokens_per_h()
    prog.rows.add(prog.z_on, 1.0, 1.0, 1.0)
    for t in range(len(problem.catalogue.types)):
        prog.rows.add(prog.z_off[t], 1.0, 0.0, 1.0)
    mine = [[k for k, u in enumerate(prog.units) if u.type_index == t]
            for t in range(len(problem.catalogue.types))]
    for y, g in enumerate(work.growth()):
        for h in range(work.n_slots):
            for j in range(len(work.batch_sizes)):
                _big_m(prog.rows, prog.x[:, j, 0, h, y], prog.z_on[j], online[h] * g)
                for t, units in enumerate(mine):
                    _big_m(prog.rows, prog.x[units, j, 1, h, y], prog.z_off[t, j],
                           offline.sum() * g)
    if not pillars.rightsize:
        _fix_default_batches(problem, prog)


def _big_m(rows: Rows, cols: Index, switch: int, bound: float) -> None:
    cols = np.asarray(cols).ravel()
    if cols.size:
        rows.add(np.append(cols, switch), np.append(np.ones(cols.size), -(bound + 1.0)),
                 -np.inf, 0.0)


def _fix_default_batches(problem: Problem, prog: Program) -> None:
    work = problem.workload
    if work.default_batch not in work.batch_sizes:
        raise ConfigError(f"default batch {work.default_batch} is not among the candidate batch "
                          f"sizes {list(work.batch_sizes)}")
    default = work.batch_sizes.index(work.default_batch)
    for j in range(len(work.batch_sizes)):
        prog.space.set_bounds(prog.z_on[j], float(j == default), float(j == default))
    for t, rates in enumerate(problem.rates):
        # A type whose memory or max_batch_size cannot take the default runs its largest fit.
        fit = [j for j, r in enumerate(rates) if r.fits and r.batch <= work.default_batch]
        pick = fit[-1] if fit else -1
        for j in range(len(work.batch_sizes)):
            prog.space.set_bounds(prog.z_off[t, j], 0.0, float(j == pick))


