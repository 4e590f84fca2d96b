"""Carbon saved and latency paid per strategy: two real CPU workers in two grid zones.

Run: ``python -m tests.benchmarks.bench_strategies``.

An embedded Redis, SQLite, the router and two single-thread CPU workers registered in AU-NSW
and GB with the grid pinned at 2024-06-03 12:00 UTC (see ``tests/strategy_run.py``). The same
40 prompts (24 new tokens each) run once per strategy, one job after another; the table gives
the CO2e accounted from each worker's energy figure (the CPU estimate, TDP x utilisation: no
energy counter on this machine) and the end-to-end latency from submit to result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.table import Table

from pipeline.app.cli.common import make_console
from pipeline.app.embedded import EmbeddedRedis
from tests.strategy_run import StrategyFigures, run_strategy, two_zone_cluster

RUNS = (("greedy", None), ("round_robin", None), ("carbon", None), ("latency", None),
        ("weighted", None), ("carbon", 12.0))


def main() -> None:
    """Run every strategy and print the table."""
    with tempfile.TemporaryDirectory(prefix="ecobatch-bench-") as tmp, \
            EmbeddedRedis() as broker:
        db = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        with two_zone_cluster(broker.url, db, Path(tmp)) as settings:
            figures = [run_strategy(settings, name, slo_s=slo) for name, slo in RUNS]
    make_console().print(table(figures))


def table(figures: list[StrategyFigures]) -> Table:
    """One row per strategy, carbon and p95 also as ratios to greedy."""
    base = figures[0]
    t = Table(title="40 prompts per strategy, AU-NSW (680 g/kWh) and GB (139 g/kWh) CPUs")
    for col in ("strategy", "prompts nsw/gb", "energy J (est.)", "gCO2e op.", "vs greedy",
                "p50 s", "p95 s", "p95 vs greedy"):
        t.add_column(col)
    for f in figures:
        t.add_row(f.strategy, f"{f.by_device.get('nsw', 0)}/{f.by_device.get('gb', 0)}",
                  f"{f.energy_j:.0f}", f"{f.carbon_g:.4f}", f"{f.carbon_g / base.carbon_g:.2f}x",
                  f"{f.p50_s:.1f}", f"{f.p95_s:.1f}", f"{f.p95_s / base.p95_s:.2f}x")
    return t


if __name__ == "__main__":
    main()
