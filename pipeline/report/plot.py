"""The chart of ``ecobatch report --plot``: per-device energy, CO2e, water and cost beside the
grid intensity of each device's zone over the job's hours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from pipeline.errors import InputError
from pipeline.report.figures import save_png
from pipeline.report.sections import COLUMNS, Section

_BARS = (("energy_kwh", "energy (kWh)"), ("carbon_g", "CO2e (g)"), ("water_l", "water (L)"),
         ("cost_usd", "cost (USD)"))
_STACKED = {"energy_kwh": ("host_energy_kwh", "device", "host share"),
            "carbon_g": ("embodied_carbon_g", "operational", "embodied")}
IntensitySeries = Mapping[str, Sequence[tuple[datetime, float]]]


def plot_report(devices: Section, intensity: IntensitySeries, path: Path, *, title: str) -> Path:
    """Draw the per-device bars (device + host energy and operational + embodied CO2e stacked)
    and, below, each zone's gCO2e/kWh over the job's hours into a PNG at ``path``.

    Raises:
        InputError: no device rows, or the file cannot be written.
    """
    if not devices.rows:
        raise InputError("the job has no results to plot")
    fig = Figure(figsize=(10.0, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, len(_BARS))
    names = [str(r[0]) for r in devices.rows]
    for i, (column, label) in enumerate(_BARS):
        ax = fig.add_subplot(grid[0, i])
        values = [_num(r[COLUMNS.index(column)]) for r in devices.rows]
        stacked = _STACKED.get(column)
        ax.bar(names, values, color="tab:green", label=stacked[1] if stacked else None)
        if stacked is not None:  # the second part on top of the first, kept visibly apart
            top = [_num(r[COLUMNS.index(stacked[0])]) for r in devices.rows]
            ax.bar(names, top, bottom=values, color="tab:brown", label=stacked[2])
            ax.legend(fontsize="small")
        ax.set_title(label, fontsize="medium")
        ax.tick_params(axis="x", labelrotation=30)
    _intensity_panel(fig.add_subplot(grid[1, :]), intensity)
    fig.suptitle(title)
    return save_png(fig, path, dpi=100)


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _intensity_panel(ax: Axes, intensity: IntensitySeries) -> None:
    for zone, points in sorted(intensity.items()):
        if points:
            times = [t for t, _ in points] + [points[-1][0] + timedelta(hours=1)]
            values = [v for _, v in points] + [points[-1][1]]
            ax.step(date2num(times), values, where="post", label=zone)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("grid intensity (gCO2e/kWh)")
    ax.set_xlabel("hour (UTC)")
    if intensity:
        ax.legend(fontsize="small")
