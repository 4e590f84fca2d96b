"""``ecobatch provision``: which fleet to buy, keep and run (after EcoServe).

An entry point: it may import ``pipeline`` and ``router``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipeline.app.cli.common import DeadlineType, handle_errors, make_console
from pipeline.app.cli.simulate import DEFAULT_START, _arrivals, arrivals_options
from pipeline.errors import ConfigError
from pipeline.grid.trace import GridTrace

DESIGN_COLUMNS = ("design", "CO2e op kg", "CO2e emb kg", "CO2e kg", "carbon design saves",
                  "energy MWh", "cost USD", "water m3", "mean latency s", "online batch",
                  "devices (year 1)", "solve s")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError as e:
        raise ConfigError(f"--batch-sizes {text!r}: expected integers like 1,2,4,8") from e
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"--batch-sizes {text!r}: needs sizes >= 1")
    return sizes


@click.command()
@click.option("--catalogue", "catalogue_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Catalogue TOML: [[site]], [[device]] types (the fleet format plus embodied "
              "keys, price, idle and host power, lifetimes) and [[owned]] devices.")
@arrivals_options("One day of requests to provision for (--hours is 24 here). ")
@click.option("--offline-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of requests that are offline batch work (EcoServe: up to 0.55).")
@click.option("--deadline-h", type=click.IntRange(1, 24), default=24, show_default=True,
              help="Hours within which offline work must be served.")
@click.option("--slo-s", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="p95 latency target of online requests in seconds, "
              "the wait for a batch to fill included.")
@click.option("--horizon-years", type=click.IntRange(1, 15), default=4, show_default=True,
              help="Years the fleet must serve (amortisation and retirement are per year).")
@click.option("--growth-per-year", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Yearly load growth (0.2 = +20% a year).")
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128", show_default=True,
              help="Candidate batch sizes.")
@click.option("--default-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Batch size used everywhere when Rightsize is off (ablation).")
@click.option("--block-h", type=click.Choice(["1", "2", "3", "4", "6", "8", "12", "24"]),
              default="4", show_default=True, help="Hours per time slot of the representative "
              "day (smaller: finer, slower).")
@click.option("--carbon", "carbon_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of grid_<ZONE>.csv files; default: the packaged 2024 traces.")
@click.option("--profiles-db", help="Database with `ecobatch bench` profiles for bench:DEVICE "
              "profiles.")
@click.option("--fleet-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the carbon design's first-year fleet here (fleet TOML for `ecobatch "
              "simulate`); default: a temporary file used for the check only.")
@click.option("--validate-hours", type=click.IntRange(min=0), default=1, show_default=True,
              help="Hours of online load to replay through the simulator (0: no check).")
@click.option("--start", type=DeadlineType(), default=DEFAULT_START, show_default=True,
              help="Simulated start of the check, ISO 8601 with a time zone.")
@click.option("--ablation/--no-ablation", default=True, show_default=True,
              help="Solve the carbon design with each pillar off in turn.")
@click.option("--time-limit-s", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Wall-clock limit of each MILP solve (the best solution then, with its gap).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of poisson:RATE arrivals and of the online draw for the check.")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON instead of tables.")
@handle_errors
def provision(catalogue_path: Path, arrivals_spec: str, rate_scale: float, requests: int | None,
              carbon_dir: Path | None, profiles_db: str | None, fleet_out: Path | None,
              as_json: bool, seed: int, **options: Any) -> None:
    """Choose the fleet with the least operational plus embodied CO2e over the horizon.

    Solves a mixed-integer program (HiGHS) for the carbon-optimal design and the performance-,
    energy- and cost-optimised ones at the same SLO and deadline, the pillar ablation (Reduce,
    Reuse, Rightsize, Recycle), and replays the carbon design's online load in the simulator.
    Every figure is an estimate from the catalogue, not a measurement.
    """
    from router.provision.catalogue import load_catalogue
    from router.provision.run import result_json, run_study

    catalogue = load_catalogue(catalogue_path)
    arrivals = _arrivals(arrivals_spec, 24, rate_scale, requests, seed)
    study = _study(catalogue, arrivals, carbon_dir, seed, options)
    engine = _engine(profiles_db)
    with tempfile.TemporaryDirectory(prefix="ecobatch-provision-") as tmp:
        path = fleet_out or Path(tmp) / "fleet.toml"
        result = run_study(replace(study, fleet_path=path), engine)
        if as_json:
            click.echo(json.dumps(result_json(result), indent=1))
            return
        _print(result, fleet_out)


def _study(catalogue: Any, arrivals: Any, carbon_dir: Path | None, seed: int,
           o: dict[str, Any]) -> Any:
    from router.provision.run import Study
    from router.provision.workload import Workload

    work = Workload(arrivals, o["offline_share"], o["deadline_h"], o["slo_s"],
                    horizon_years=o["horizon_years"], growth_per_year=o["growth_per_year"],
                    batch_sizes=_batch_sizes(o["batch_sizes"]), default_batch=o["default_batch"],
                    block_h=int(o["block_h"]))
    grid = GridTrace(carbon_dir) if carbon_dir else GridTrace()
    start: datetime = o["start"]
    return Study(catalogue, work, grid, start.astimezone(UTC),
                 validate_hours=o["validate_hours"], ablate=o["ablation"],
                 time_limit_s=o["time_limit_s"], seed=seed)


def _engine(profiles_db: str | None) -> Any:
    if profiles_db is None:
        return None
    from pipeline.ledger.db import make_engine

    return make_engine(profiles_db)


def _print(result: Any, fleet_out: Path | None) -> None:
    console = make_console()
    console.print(designs_table(result))
    console.print(fleet_table(result.carbon))
    if result.effects:
        console.print(ablation_table(result))
    v = result.validation
    if v is not None:
        s = v.summary
        where = f"; fleet written to {fleet_out}" if fleet_out else ""
        console.print(f"simulator check of the carbon design (year 1, {s.requests:,} online "
                      f"requests, strategy {s.strategy}): p95 {s.p95_s:.2f} s vs SLO "
                      f"{s.slo_s:g} s, {v.slo_attainment:.1%} within the SLO, missed "
                      f"{s.missed:,}: SLO {'holds' if v.slo_holds else 'does NOT hold'}{where}")
    console.print(f"solved in {result.wall_s:.1f} s; every figure is an estimate from the "
                  "catalogue's profiles, not a measurement")


def designs_table(result: Any) -> Table:
    """One row per design point: CO2e, energy, cost, water, latency, what the carbon design saves."""
    from router.provision.designs import reduction

    table = Table(title="design points (horizon totals; SLO met by construction)")
    for col in DESIGN_COLUMNS:
        table.add_column(col, justify="left" if col == "design" else "right")
    for d in result.designs:
        m = d.metrics
        devices = sum(f.counts[0] for f in d.fleet)
        table.add_row(d.name, f"{m['carbon_op_kg']:,.0f}", f"{m['carbon_emb_kg']:,.0f}",
                      f"{m['carbon_kg']:,.0f}", f"{reduction(result.carbon, d):.1%}",
                      f"{m['energy_kwh'] / 1000:,.1f}", f"{m['cost_usd']:,.0f}",
                      f"{m['water_l'] / 1000:,.1f}", f"{m['mean_latency_s']:.2f}",
                      str(d.online_batch), str(devices), f"{d.solve_s:.1f}")
    return table


def fleet_table(design: Any) -> Table:
    """The design's devices per unit and year, and its offline batch sizes."""
    table = Table(title=f"{design.name} design: devices in service per year "
                  f"(online batch {design.online_batch}; host CPUs serve "
                  f"{design.metrics['host_cpu_share']:.1%} of offline tokens)")
    for col in ("type", "site", "new/owned", "devices per year", "offline batch"):
        table.add_column(col)
    for f in design.fleet:
        kind = f"owned, {f.age_years:g} y old" if f.owned else "new"
        table.add_row(f.type_name, f.site, kind, " ".join(str(c) for c in f.counts),
                      str(design.offline_batch.get(f.type_name, "-")))
    return table


def ablation_table(result: Any) -> Table:
    """Each pillar turned off in turn: the carbon design's CO2e then, and what the pillar saved."""
    table = Table(title="pillar ablation (carbon design with one pillar off)")
    for col in ("pillar off", "CO2e kg", "saved by the pillar kg", "share"):
        table.add_column(col, justify="left" if col == "pillar off" else "right")
    for e in result.effects:
        if e.design is None:
            table.add_row(e.pillar, "SLO unreachable", "indispensable", "-")
            continue
        table.add_row(e.pillar, f"{e.design.carbon_kg:,.0f}", f"{e.saved_kg:,.0f}",
                      f"{e.saved_share:.1%}")
    return table
