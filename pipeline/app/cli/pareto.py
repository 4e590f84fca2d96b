"""``ecobatch optimise --pareto --method nsga2``: the NSGA-II front and its comparison with the
LP sweep on the same instance.

An entry point: it may import ``pipeline`` and ``router``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

FRONT_ROWS = 20


@dataclass(frozen=True)
class FrontPoint:
    """One printed row of a front, as a plan the live router can follow.

    Attributes:
        shares: share of each hour's load per site, shape (sites, hours).
        objectives: the point's objective values, for the plan file's record.
    """

    shares: NDArray[np.float64]
    objectives: dict[str, float]


def report_nsga2(console: Any, sc: Any, seed: int, menu: Any = None) -> list[FrontPoint]:
    """Run the LP sweep, then NSGA-II seeded with its solutions, on ``sc`` with ``menu`` (a
    ``router.sim.modelmenu.RegistryMenu``; None: the synthetic Qwen3 menu); print the front
    and how it compares with the sweep's. Return the printed rows, in order, as plans (sites
    only: the model mix of a point is not part of a plan)."""
    from router.allocation.moo.compare import compare_fronts, sweep_front
    from router.allocation.moo.instance import instance_from_scenario
    from router.allocation.moo.nsga import nsga2_front

    inst = (instance_from_scenario(sc) if menu is None
            else instance_from_scenario(sc, menu.models, offers=menu.offers))
    sweep = sweep_front(inst, seed=seed)
    front = nsga2_front(inst, seed=seed, seeds=sweep.tokens)
    shown = shown_rows(front.objectives)
    console.print(front_table(front, inst, float(sc.demand.sum()), shown))
    c = compare_fronts(front, sweep)
    console.print(f"NSGA-II (seeded with the sweep's solutions) vs LP sweep on the same instance: "
                  f"hypervolume {c.hv_nsga2:.3f} vs "
                  f"{c.hv_sweep:.3f} (normalised over both fronts, reference 1.1); "
                  f"{c.nsga2_only} of {c.nsga2_points} NSGA-II points no sweep point reaches, "
                  f"{c.sweep_only} of {c.sweep_points} sweep points no NSGA-II point reaches; "
                  f"{c.nsga2_s:.2f} s (after the sweep) vs {c.sweep_s:.2f} s")
    console.print("models (quality 0-1; speed and J/token relative to the first):")
    for m in inst.models:
        console.print(f"  {m.name}: quality {m.quality:.3f} ({m.quality_source}); speed "
                      f"{m.speed:.3f}, energy {m.energy:.3f} ({m.figures_source})")
    console.print("sites idle-park when unused (30% of peak power otherwise)")
    return [_front_point(front, inst, int(i)) for i in shown]


def _front_point(front: Any, inst: Any, i: int) -> FrontPoint:
    """Row ``i`` of the front as site shares of each hour (its models summed per site)."""
    n_sites = max(s for s, _ in inst.pairs) + 1
    by_site = np.zeros((n_sites, front.tokens.shape[2]))
    for k, (site, _) in enumerate(inst.pairs):
        by_site[site] += front.tokens[i, k]
    total = by_site.sum(axis=0, keepdims=True)
    shares = np.divide(by_site, total, out=np.zeros_like(by_site), where=total > 0)
    f = front.objectives[i]
    return FrontPoint(shares, {"quality": float(-f[0]), "ttft_s": float(f[1]),
                               "carbon": float(f[2]), "water": float(f[3]), "cost": float(f[4])})


def shown_rows(f: NDArray[np.float64]) -> NDArray[np.intp]:
    """Up to FRONT_ROWS point indices spread over the front's carbon range, lowest first."""
    order = np.argsort(f[:, 2])
    return order[np.unique(np.linspace(0, len(order) - 1,
                                       min(FRONT_ROWS, len(order))).astype(int))]


def front_table(front: Any, inst: Any, tokens: float, shown: NDArray[np.intp]) -> Table:
    """The ``shown`` points of the front, numbered as ``--pick`` takes them."""
    f = front.objectives
    table = Table(title=f"NSGA-II front: {len(f)} points ({len(shown)} shown), "
                  f"{front.evaluations:,} evaluations in {front.wall_s:.2f} s")
    for col in ("row", "quality", "TTFT s", "carbon kg", "water L", "cost USD", "models served"):
        table.add_column(col, justify="right")
    for row, i in enumerate(shown):
        share = front.tokens[i].sum(axis=1) / tokens
        by_model: dict[str, float] = {}
        for (_, m), s in zip(inst.pairs, share, strict=True):
            by_model[inst.models[m].name] = by_model.get(inst.models[m].name, 0.0) + s
        table.add_row(str(row), f"{-f[i, 0]:.3f}", f"{f[i, 1]:.3f}", f"{f[i, 2] / 1000:.1f}",
                      f"{f[i, 3]:.0f}", f"{f[i, 4]:.2f}",
                      " ".join(f"{k} {v:.0%}" for k, v in by_model.items() if v > 0.005))
    return table
