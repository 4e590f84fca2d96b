"""PNG charts of a comparison: carbon and latency over time per strategy; edge batch sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.errors import InputError
from pipeline.report.figures import save_png
from router.sim.metrics import Series, Summary


def _figure(items: Sequence[object], what: str, size: tuple[float, float], nrows: int,
            ncols: int, *, sharex: bool = False) -> tuple[Figure, Any]:
    if not items:
        raise InputError(f"no {what} to plot")
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, sharex=sharex)


def plot_series(series: Sequence[Series], path: Path, *, title: str) -> Path:
    """Operational kgCO2e per hour and p95 latency per hour, one line per strategy.

    Raises:
        InputError: nothing to draw, or the file cannot be written.
    """
    fig, (ax_c, ax_l) = _figure(series, "simulation series", (8.0, 6.0), 2, 1, sharex=True)
    for s in series:
        hours = np.arange(len(s.carbon_kg))
        ax_c.plot(hours, s.carbon_kg, drawstyle="steps-post", label=s.strategy)
        ax_l.plot(hours, s.p95_s, drawstyle="steps-post", label=s.strategy)
    ax_c.set_ylabel("operational kgCO2e per hour")
    ax_l.set_ylabel("p95 latency (s)")
    ax_l.set_yscale("symlog", linthresh=1.0)
    ax_l.set_xlabel("simulated hour")
    for ax in (ax_c, ax_l):
        ax.grid(True, alpha=0.3)
    ax_c.legend(fontsize=8)
    fig.suptitle(f"{title}\nsimulated: energy from the predictor, not measured", fontsize=10)
    return save_png(fig, path)


def plot_batch_sweep(rows: Sequence[tuple[int, Summary]], path: Path, *, title: str) -> Path:
    """Per strategy: gCO2e per request and p95 latency against batch size.

    Raises:
        InputError: nothing to draw, or the file cannot be written.
    """
    fig, (ax_c, ax_l) = _figure(rows, "sweep rows", (8.0, 4.0), 1, 2)
    for name in dict.fromkeys(s.strategy for _, s in rows):
        pts = sorted((b, s) for b, s in rows if s.strategy == name)
        sizes = [b for b, _ in pts]
        ax_c.plot(sizes, [1000 * (s.carbon_kg + s.embodied_kg) / max(s.served, 1)
                          for _, s in pts], "o-", label=name)
        ax_l.plot(sizes, [s.p95_s for _, s in pts], "o-", label=name)
    ax_c.set_ylabel("gCO2e per request (operational + embodied)")
    ax_l.set_ylabel("p95 latency (s)")
    for ax in (ax_c, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
    ax_c.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
