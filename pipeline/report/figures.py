"""Writing matplotlib figures: the one place a plot file is saved and its errors mapped."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from pipeline.errors import InputError


def save_png(fig: Figure, path: Path | str, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` as PNG.

    Raises:
        InputError: the file cannot be written (the message names it).
    """
    out = Path(path)
    try:
        fig.savefig(out, dpi=dpi)
    except OSError as e:
        raise InputError(f"cannot write plot {out}: {e}") from e
    return out
