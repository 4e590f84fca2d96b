"""Check a design in the simulator: its first-year fleet as a fleet TOML, the online load run.

The fleet file is the simulator's format (:mod:`router.sim.fleet`): one ``[[device]]`` table per
unit with ``count``, ``profile``, ``model_gb`` and ``kv_kib_per_token``, the site's zone and
cooling, and ``embodied_kgco2e`` = the GPU plus its share of the host. The online share of the
requests (a seeded draw with the workload's offline share left out: offline work is deferred
by the planner, not routed at once) is replayed through the live router's code with the
design's online batch size, the router waiting as long as such a batch takes to arrive, and
the SLO; by default with the ``latency`` strategy (earliest finish), the routing that asks least
of the fleet, so a miss is the fleet's and not the strategy's. The SLO holds when the p95
latency is within it and no request is missed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.grid.trace import GridConditions
from pipeline.settings import Settings
from router.config import RouterConfig
from router.provision.catalogue import Catalogue, site_device
from router.provision.designs import Design, FleetEntry
from router.provision.workload import Workload
from router.sim.arrivals import Arrivals
from router.sim.compare import SimRun, compare
from router.sim.fleet import load_fleet
from router.sim.metrics import Summary


@dataclass(frozen=True)
class Validation:
    """What the simulator says of a design's first-year fleet."""

    fleet_path: Path
    summary: Summary

    @property
    def slo_attainment(self) -> float:
        """Share of simulated online requests served within the SLO."""
        s = self.summary
        return 1.0 - s.slo_misses / s.requests if s.requests else 1.0

    @property
    def slo_holds(self) -> bool:
        """Whether the p95 latency is within the SLO and nothing was missed."""
        return self.summary.missed == 0 and self.summary.p95_s <= self.summary.slo_s


def fleet_tables(cat: Catalogue, design: Design, year: int = 0) -> list[dict[str, Any]]:
    """The ``[[device]]`` tables of the design's fleet in ``year``."""
    sites = {s.name: s for s in cat.sites}
    tables = []
    for entry in design.fleet:
        count = entry.counts[year]
        if count <= 0:
            continue
        t = cat.type_named(entry.type_name)
        device = site_device(t, sites[entry.site], name=_unit_name(entry))
        table = device.model_dump(mode="json", exclude_none=True)
        table.update(count=count, profile=t.profile, embodied_kgco2e=round(t.embodied_kgco2e, 3))
        if t.model_bytes is not None:
            table.update(model_gb=t.model_bytes / 1024**3,
                         kv_kib_per_token=t.kv_bytes_per_token / 1024)
        tables.append(table)
    return tables


def _unit_name(entry: FleetEntry) -> str:
    return f"{entry.type_name}-{entry.site}" + ("-owned" if entry.owned else "")


def write_fleet(path: Path, tables: list[dict[str, Any]], header: str) -> None:
    """Write ``tables`` as a fleet TOML (scalars and flat lists only, as the format has).

    Raises:
        ConfigError: the file cannot be written.
    """
    lines = [f"# {line}" for line in header.splitlines()]
    for table in tables:
        lines += ["", "[[device]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    try:
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e}") from e


def _toml_value(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays are valid TOML for the values used here.
    return json.dumps(value)


def online_arrivals(work: Workload, hours: int, seed: int) -> Arrivals:
    """The first ``hours`` of the day's requests, the offline share drawn out (seeded)."""
    arr = work.arrivals
    keep = (np.random.default_rng(seed).random(len(arr)) >= work.offline_share) & (
        arr.t_s < hours * 3600.0)
    return Arrivals(arr.t_s[keep], arr.prompt_tokens[keep], arr.max_tokens[keep])


def validate(cat: Catalogue, design: Design, work: Workload, grid: GridConditions,
             fleet_path: Path, start: datetime, *, hours: int = 1, seed: int = 0,
             strategy: str = "latency") -> Validation:
    """Write the design's first-year fleet to ``fleet_path`` and simulate its online load.

    Raises:
        ConfigError: the fleet is empty, or it cannot be written or simulated.
    """
    tables = fleet_tables(cat, design)
    if not tables:
        raise ConfigError(f"design {design.name!r} has no device in its first year")
    write_fleet(fleet_path, tables, f"ecobatch provision: the {design.name} design, year 1 "
                "(estimates, not measurements)")
    fleet = load_fleet(fleet_path)
    # The router waits as long as a full batch takes to arrive (the MILP counted that wait).
    config = RouterConfig.from_settings(Settings(
        batch_size=design.online_batch, max_wait_s=max(work.fill_s(design.online_batch), 0.01),
        slo_s=work.slo_s))
    run = SimRun(fleet, online_arrivals(work, hours, seed), grid, config, start, hours,
                 work.slo_s)
    return Validation(fleet_path, compare(run, [strategy]).summaries[0])
