"""``ecobatch report JOB``: what a job cost, in totals and per device, optionally as a chart."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import click
from rich.table import Table

from pipeline.app.cli.common import (
    build_settings,
    database_url_option,
    devices_option,
    handle_errors,
    make_console,
)
from pipeline.errors import ConfigError, EcobatchError
from pipeline.fleet.devices import Device, Registry, load_registry
from pipeline.grid.data import GridData
from pipeline.grid.hourly import hour_start
from pipeline.grid.trace import GridConditions, device_conditions
from pipeline.ledger.db import make_engine
from pipeline.report.sections import (
    ReportData,
    Section,
    build_report,
    job_hours,
    load_report_data,
)

_UNITS = {"energy_kwh": "kWh", "host_energy_kwh": "kWh", "carbon_g": "gCO2e",
          "embodied_carbon_g": "gCO2e", "water_l": "L", "cost_usd": "USD",
          "latency_p50_s": "s", "latency_p95_s": "s"}


@click.command("report")
@click.argument("job_id", metavar="JOB")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the per-device figures and the zones' grid intensity (gCO2e/kWh) "
                   "over the job's hours into this PNG file.")
@click.option("--json", "as_json", is_flag=True, help="Print the sections as JSON.")
@database_url_option
@devices_option
@handle_errors
def report(job_id: str, plot_path: Path | None, as_json: bool, database_url: str | None,
           devices: Path | None) -> None:
    """Print what JOB cost: energy (kWh; device, and a GPU's host share apart), CO2e (g,
    operational and embodied), water (L), cost (USD), tokens and latency p50/p95 (s), in total
    and per device. energy_measured is the share of prompts whose energy was measured."""
    settings = build_settings(database_url=database_url, devices=devices)
    data = load_report_data(make_engine(settings.database_url), job_id)
    sections = build_report(data)
    if as_json:
        click.echo(json.dumps([{"title": s.title, "columns": s.columns, "rows": s.rows,
                                "note": s.note} for s in sections], default=str, indent=1))
    else:
        console = make_console()
        for section in sections:
            console.print(_table(section))
            if section.note:
                console.print(section.note)
    if plot_path is not None:
        from pipeline.report.plot import plot_report

        intensity = zone_intensity(data, _registry(settings.devices), GridData(settings.grid_dir))
        plot_report(sections[1], intensity, plot_path, title=f"job {job_id}")
        click.echo(f"plot written to {plot_path}")


def _registry(path: Path | None) -> Registry | None:
    try:
        return load_registry(path) if path is not None else None
    except ConfigError:
        return None  # the plot then shows the intensities the rows were accounted at


def zone_intensity(data: ReportData, registry: Registry | None,
                   grid: GridConditions) -> dict[str, list[tuple]]:
    """Hourly intensity of each device's grid (its zone, or its fixed intensity; see
    :func:`~pipeline.grid.trace.device_conditions`) over the job's hours; a device missing from the
    registry, or whose grid data fails, contributes the intensities its rows were accounted at
    instead."""
    span = job_hours(data)
    if span is None:
        return {}
    first, last = hour_start(span[0]), hour_start(span[1])
    hours = [first + timedelta(hours=k) for k in range(int((last - first) / timedelta(hours=1)) + 1)]
    known = set(registry.names) if registry is not None else set()
    out: dict[str, list[tuple]] = {}
    for name in sorted({r.device for r in data.results}):
        device = registry.get(name) if registry is not None and name in known else None
        series = _device_hours(grid, device, hours) if device is not None else None
        if device is not None and series is not None:
            out.setdefault(device.grid_label, series)
            continue
        rows = sorted((hour_start(r.created_at), r.intensity_g_per_kwh)
                      for r in data.results if r.device == name)
        out[f"{name} (as accounted)"] = list(dict(rows).items())
    return out


def _device_hours(grid: GridConditions, device: Device,
                  hours: list[datetime]) -> list[tuple] | None:
    try:
        return [(h, device_conditions(grid, device, h).intensity_g_per_kwh) for h in hours]
    except EcobatchError:
        return None  # the plot shows what the rows were accounted at instead


def _table(section: Section) -> Table:
    table = Table(title=section.title)
    for c in section.columns:
        table.add_column(f"{c} ({_UNITS[c]})" if c in _UNITS else c,
                         justify="left" if c == "device" else "right")
    for row in section.rows:
        table.add_row(*(_fmt(v) for v in row))
    return table


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
