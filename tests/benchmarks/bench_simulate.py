"""Fleet simulator and allocation LP at scale.

Prints: wall time and peak memory (``resource.getrusage``) of 1,000,000 requests over 24
simulated hours on the 100-device ``examples/fleet.toml`` with the ``carbon`` strategy (goal:
< 60 s, < 2 GB on 2 cores); the LP solve time for 50 sites x 24 hours (goal: < 1 s); and the
online ``carbon`` strategy's operational carbon against the LP lower bound on the same batches.

Run: ``python -m tests.benchmarks.bench_simulate [--requests N] [--strategy S]``.
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.grid.trace import GridTrace
from pipeline.settings import Settings
from router.allocation.lp import solve_lexicographic
from router.config import RouterConfig
from router.sim.arrivals import read_trace, replay, scale_for_requests
from router.sim.compare import SimRun, carbon_bound, compare, gaps_to
from router.sim.fleet import load_fleet
from router.sim.scenario import build_scenario, synthetic_sites

FLEET = Path(__file__).parents[2] / "examples" / "fleet.toml"
START = datetime(2024, 6, 1, tzinfo=UTC)


def bench_sim(n_requests: int, strategy: str) -> None:
    """Simulate ``n_requests`` over 24 h on 100 devices; print wall time and peak memory."""
    fleet = load_fleet(FLEET)
    trace = read_trace()
    arrivals = replay(trace, 24, scale_for_requests(trace, 24, n_requests))
    settings = Settings(batch_size=16, max_wait_s=1.0, slo_s=30.0)
    run = SimRun(fleet, arrivals, GridTrace(), RouterConfig.from_settings(settings), START, 24, 30.0)
    began = time.perf_counter()
    result = compare(run, [strategy])
    wall_s = time.perf_counter() - began
    s = result.summaries[0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"simulate: {s.requests:,} requests, {len(fleet.registry.devices)} devices, 24 h, "
          f"{strategy}: {wall_s:.1f} s wall, peak RSS {peak_mb:.0f} MB; {s.batches:,} batches, "
          f"p95 {s.p95_s:.1f} s, {s.carbon_kg:.2f} kgCO2e operational")
    bound = carbon_bound(run, result)
    gap = gaps_to(bound, [s])[0]
    print(f"carbon gap: online {gap.online_kg:.3f} kg vs LP lower bound {gap.bound_kg:.3f} kg "
          f"({gap.gap:+.1%}); LP solved in {bound.solve_s:.3f} s")


def bench_lp(n_sites: int = 50, hours: int = 24) -> None:
    """Solve the lexicographic LP (cost, carbon, delay) for ``n_sites`` x ``hours``."""
    sites = synthetic_sites(n_sites, seed=7)
    cap = sum(s.count * s.tokens_per_s * 3600 for s in sites)
    demand = cap * 0.5 * (1 + 0.3 * np.sin(np.arange(hours) / 24 * 2 * np.pi))
    sc, _ = build_scenario(sites, demand, GridTrace(), START)
    for defer in (False, True):
        sc_run = sc if not defer else type(sc)(**{**sc.__dict__, "allow_defer": True})
        alloc = solve_lexicographic(sc_run)
        print(f"LP {n_sites} sites x {hours} h, defer={defer}: {alloc.solves} lexicographic "
              f"solves in {alloc.solve_s:.3f} s")


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--strategy", default="carbon")
    args = parser.parse_args()
    bench_lp()
    bench_sim(args.requests, args.strategy)


if __name__ == "__main__":
    main()
