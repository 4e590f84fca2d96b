"""NSGA-II (pymoo) against the weighted-sum LP sweep on the same instances.

Two instances over the same synthetic sites (``router.sim.scenario.synthetic_sites``) and the
packaged 2024 grid traces, June 1, 24 hours, demand 40% of capacity with a daily swing:

- linear: one model, no fixed charge, no queueing: the LP's own model (its front is convex,
  so the sweep finds supported points exactly);
- non-convex: the default model menu (Qwen3 8B/14B/32B; ML.ENERGY speed and energy ratios,
  quality a proxy), a fixed charge for waking a site (30% of peak power) and queueing in TTFT.

NSGA-II runs twice: from a random population (``nsga2``) and with the sweep's solutions in its
first population (``nsga2+lp``, what ``optimise --pareto --method nsga2`` runs). Prints
hypervolume (normalised over both fronts), the points each method finds that the other does
not reach, and wall time. Run: ``python tests/benchmarks/bench_pareto.py [--sites 12]``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import numpy as np

from pipeline.grid.trace import GridTrace
from router.allocation.moo.compare import compare_fronts, sweep_front
from router.allocation.moo.instance import MooInstance, instance_from_scenario, linear_instance
from router.allocation.moo.nsga import nsga2_front
from router.sim.scenario import build_scenario, synthetic_sites


def instances(n_sites: int, hours: int, seed: int) -> list[tuple[str, MooInstance]]:
    """The linear and the non-convex instance over the same sites and hours."""
    specs = synthetic_sites(n_sites, seed)
    capacity = sum(s.count * s.tokens_per_s * 3600.0 for s in specs)
    demand = capacity * 0.4 * (1 + 0.3 * np.sin(np.arange(hours) / 24 * 2 * np.pi))
    sc, _ = build_scenario(specs, demand, GridTrace(), datetime(2024, 6, 1, tzinfo=UTC))
    return [("linear", linear_instance(sc)), ("non-convex", instance_from_scenario(sc))]


def main() -> None:
    """Run both methods on both instances and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=12)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| instance | method | genes | HV NSGA-II | HV sweep | NSGA-II points (not reached by "
          "sweep) | sweep points (not reached by NSGA-II) | NSGA-II s | sweep s (LPs) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, inst in instances(args.sites, args.hours, args.seed):
        sweep = sweep_front(inst, seed=args.seed)
        for seeds in (None, sweep.tokens):
            nsga = nsga2_front(inst, generations=args.generations, seed=args.seed, seeds=seeds)
            c = compare_fronts(nsga, sweep)
            print(f"| {name} | {nsga.method} | {inst.n_var} | {c.hv_nsga2:.3f} | {c.hv_sweep:.3f} "
                  f"| {c.nsga2_points} ({c.nsga2_only}) | {c.sweep_points} ({c.sweep_only}) "
                  f"| {c.nsga2_s:.2f} | {c.sweep_s:.2f} ({sweep.evaluations}) |")


if __name__ == "__main__":
    main()
