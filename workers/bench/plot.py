"""Charts of a device profile: energy per token and throughput against batch size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from pipeline.errors import InputError
from pipeline.report.figures import save_png
from workers.bench.run import ProfileRow, describe_energy_source


def plot_profile(rows: Sequence[ProfileRow], path: Path, *, device: str, model: str) -> Path:
    """Draw J/token and throughput (tokens/s) against batch size into a PNG at ``path``.

    Two panels share a log2 batch-size axis; the title names the device, the model and how
    energy was obtained.

    Raises:
        InputError: there is no row to draw, or the file cannot be written.
    """
    if not rows:
        raise InputError("no profile rows to plot")
    ordered = sorted(rows, key=lambda r: r.batch_size)
    sizes = [r.batch_size for r in ordered]
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax_energy, ax_tput = fig.subplots(2, 1, sharex=True)
    ax_energy.plot(sizes, [r.j_per_token for r in ordered], "o-", color="tab:green")
    ax_energy.set_ylabel("energy per token (J)")
    ax_tput.plot(sizes, [r.tokens_per_s for r in ordered], "s-", color="tab:blue")
    ax_tput.set_ylabel("throughput (tokens/s)")
    ax_tput.set_xlabel("batch size (prompts, log2 scale)")
    ax_tput.set_xscale("log", base=2)
    ax_tput.xaxis.set_major_locator(FixedLocator(sizes))
    ax_tput.xaxis.set_minor_locator(NullLocator())
    ax_tput.xaxis.set_major_formatter(ScalarFormatter())
    for ax in (ax_energy, ax_tput):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    source = describe_energy_source(ordered[0].energy_source, ordered[0].energy_measured)
    fig.suptitle(f"{device} - {model}\nenergy {source}", fontsize=11)
    return save_png(fig, path, dpi=120)
