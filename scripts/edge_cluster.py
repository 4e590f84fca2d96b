"""Reproduce the edge-cluster study's setting in the simulator: docs/edge_cluster.{md,png}.

One Jetson Orin NX 8GB and one RTX 2000 Ada 16GB in one zone (``examples/edge_cluster.toml``,
nominal figures, not measured), batch sizes 1 to 16, greedy vs carbon vs latency. As in the
study's offline benchmark, a set of prompts is submitted at once: 200 requests at 2024-06-01
00:00 UTC whose token counts are drawn (seed 42) from the Azure conversation trace. No latency
target is set, so each strategy shows its own trade-off.

Run: ``python scripts/edge_cluster.py [--out docs]``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.grid.trace import GridTrace
from pipeline.settings import Settings
from router.sim.arrivals import Arrivals, poisson
from router.sim.compare import SimRun, compare
from router.sim.fleet import load_fleet
from router.sim.metrics import Summary
from router.sim.plots import plot_batch_sweep

ROOT = Path(__file__).parents[1]
START = datetime(2024, 6, 1, tzinfo=UTC)
HOURS, N_REQUESTS, SEED, SLO_S = 1, 200, 42, 600.0
BATCH_SIZES = (1, 2, 4, 8, 16)
STRATEGIES = ("greedy", "carbon", "latency")


def sweep() -> list[tuple[int, Summary]]:
    """One simulation per batch size and strategy."""
    fleet = load_fleet(ROOT / "examples" / "edge_cluster.toml")
    drawn = poisson(N_REQUESTS / 3600.0, 1.0, SEED)
    arrivals = Arrivals(np.zeros(len(drawn)), drawn.prompt_tokens, drawn.max_tokens)
    rows = []
    for b in BATCH_SIZES:
        settings = Settings(batch_size=b, max_wait_s=5.0)
        run = SimRun(fleet, arrivals, GridTrace(), settings, START, HOURS, SLO_S)
        rows += [(b, s) for s in compare(run, STRATEGIES).summaries]
    return rows


def table(rows: list[tuple[int, Summary]]) -> str:
    """Markdown table of the sweep."""
    lines = ["| batch | strategy | served | missed (memory) | energy Wh | gCO2e/request (op + emb) "
             "| p50 s | p95 s | p99 s | Orin busy | Ada busy |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, s in rows:
        per_req = 1000 * (s.carbon_kg + s.embodied_kg) / max(s.served, 1)
        lines.append(f"| {b} | {s.strategy} | {s.served} | {s.missed} | {1000 * s.energy_kwh:.1f} "
                     f"| {per_req:.3f} | {s.p50_s:.1f} | {s.p95_s:.1f} | {s.p99_s:.1f} "
                     f"| {s.utilisation['orin-nx']:.1%} | {s.utilisation['ada2000']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    """Run the sweep and print the table; write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    rows = sweep()
    print(table(rows))
    plot_batch_sweep(rows, args.out / "edge_cluster.png",
                     title="Orin NX 8GB + RTX 2000 Ada 16GB, one zone (DE-LU), simulated with "
                     "nominal figures")


if __name__ == "__main__":
    main()
