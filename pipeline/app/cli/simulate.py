"""``ecobatch simulate`` and ``ecobatch optimise``: fleet simulation and optimal allocation.

An entry point: it may import ``pipeline`` and ``router``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
from rich.table import Table

from pipeline.app.cli.common import DeadlineType, WeightsType, build_settings, handle_errors, make_console
from pipeline.errors import ConfigError
from pipeline.grid.data import GridData, offline_grid

DEFAULT_START = "2024-06-01T00:00Z"
F = TypeVar("F", bound=Callable[..., Any])
SIM_STRATEGIES = ("greedy", "round_robin", "carbon", "latency", "weighted", "optimal")


def _arrivals(spec: str, hours: int, rate_scale: float, requests: int | None, seed: int,
              start: datetime | None = None) -> Any:
    from router.sim.arrivals import diurnal, poisson, read_trace, replay, scale_for_requests

    kind, _, rate_text = spec.partition(":")
    if kind in ("poisson", "diurnal") and rate_text:
        try:
            rate = float(rate_text)
        except ValueError as e:
            raise ConfigError(f"--arrivals {spec!r}: expected {kind}:RATE_PER_S") from e
        if kind == "poisson":
            return poisson(rate, hours, seed)
        at = (start or datetime.fromisoformat(DEFAULT_START)).astimezone(UTC)
        return diurnal(rate, hours, seed, start_hour_utc=at.hour + at.minute / 60.0)
    trace = read_trace(None if spec == "azure" else Path(spec))
    if requests is not None:
        rate_scale = scale_for_requests(trace, hours, requests)
    return replay(trace, hours, rate_scale)


def arrivals_options(about: str = "") -> Callable[[F], F]:
    """The options --arrivals, --rate-scale and --requests, their help prefixed by ``about``."""
    options = [
        click.option("--arrivals", "arrivals_spec", default="azure", show_default=True,
                     help=about + "'azure' (packaged Azure LLM conversation trace), a CSV in its "
                     "layout (TIMESTAMP, ContextTokens, GeneratedTokens), poisson:RATE "
                     "(requests/s) or diurnal:RATE (Poisson, mean RATE requests/s, rate "
                     "swinging +-80% over the day, peak 14:00 UTC)."),
        click.option("--rate-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
                     show_default=True, help="Multiply the trace's arrival rate by this."),
        click.option("--requests", type=click.IntRange(min=1), help="Scale the trace to about "
                     "this many requests over --hours (overrides --rate-scale)."),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _names(strategy: str, compare: str | None) -> list[str]:
    names = [n.strip() for n in compare.split(",") if n.strip()] if compare else [strategy]
    return names


def summary_table(summaries: list[Any]) -> Table:
    """One row per strategy: energy, carbon, water, cost, latency percentiles, SLO misses."""
    table = Table(title="simulated fleet (estimates from the predictor, not measurements)")
    for col in ("strategy", "served", "missed", "energy kWh", "CO2e op kg", "CO2e emb kg",
                "water L", "cost USD", "p50 s", "p95 s", "p99 s", "SLO misses", "util"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for s in summaries:
        table.add_row(s.strategy, f"{s.served:,}", f"{s.missed:,}", f"{s.energy_kwh:.3f}",
                      f"{s.carbon_kg:.3f}", f"{s.embodied_kg:.3f}", f"{s.water_l:.1f}",
                      s.cost_text(), f"{s.p50_s:.2f}", f"{s.p95_s:.2f}", f"{s.p99_s:.2f}",
                      f"{s.slo_misses:,}", f"{s.mean_utilisation:.1%}")
    return table


@click.command()
@click.option("--devices", "fleet_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Fleet TOML: the device registry format plus count, profile, model_gb, "
              "kv_kib_per_token per [[device]].")
@arrivals_options()
@click.option("--carbon", "carbon_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of your own grid files that adds zones to (and may override) the "
              "packaged 2024 traces: Electricity Maps hourly CSV, price CSV, Open-Meteo JSON "
              "named <ZONE>_<YEAR>[_...].csv/.json, or grid_<ZONE>.csv [default: "
              "ECOBATCH_GRID_DIR].")
@click.option("--start", type=DeadlineType(), default=DEFAULT_START, show_default=True,
              help="Simulated start, ISO 8601 with a time zone.")
@click.option("--hours", type=click.IntRange(min=1), default=24, show_default=True,
              help="Simulated hours of arrivals.")
@click.option("--strategy", type=click.Choice(SIM_STRATEGIES), default="carbon", show_default=True,
              help="Strategy to simulate (optimal: follow the allocation LP's hourly plan).")
@click.option("--compare", help="Comma-separated strategies to run side by side, e.g. "
              "greedy,carbon,latency,weighted,optimal (overrides --strategy).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per batch [default 4].")
@click.option("--max-wait-s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds before a partial batch is flushed [default 0.5].")
@click.option("--slo-s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Latency target in seconds: routing honours it as the live "
              "router does with ECOBATCH_SLO_S, and SLO misses count against it.")
@click.option("--weights", type=WeightsType(), help="Weights of the weighted strategy, e.g. "
              "carbon=3,latency=1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of Poisson arrivals.")
@click.option("--profiles-db", help="Database with `ecobatch bench` profiles for bench:DEVICE "
              "profiles [env ECOBATCH_DATABASE_URL].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG of carbon and p95 latency per hour per strategy.")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON of every figure, including utilisation per device.")
@click.option("--gap/--no-gap", default=False, help="Also report each strategy's operational "
              "carbon against a lower bound: the LP over the same batches, hours, zones and "
              "device-hours, which no schedule can beat.")
@click.option("--objective", "plan_objective", default="lex:cost,carbon,delay",
              show_default=True, help="What the optimal strategy's plan optimises, "
              "lexicographically: lex: then cost, carbon, delay, water in order.")
@handle_errors
def simulate(fleet_path: Path, arrivals_spec: str, rate_scale: float, requests: int | None,
             carbon_dir: Path | None, start: datetime, hours: int, strategy: str,
             compare: str | None, slo_s: float, seed: int, profiles_db: str | None,
             plot_path: Path | None, output_path: Path | None, gap: bool, plan_objective: str,
             **overrides: Any) -> None:
    """Simulate a fleet with the live router's batching, strategies and predictors.

    Deterministic for given inputs and seed. Energy, carbon, water and cost are estimates from
    the fleet's profiles, not measurements.
    """
    from router.config import RouterConfig
    from router.sim.compare import SimRun
    from router.sim.compare import compare as run_compare
    from router.sim.fleet import load_fleet

    settings = build_settings(slo_s=slo_s, **overrides)
    engine = _profiles_engine(fleet_path, profiles_db, settings.database_url)
    fleet = load_fleet(fleet_path, engine)
    grid = offline_grid(fleet.registry, carbon_dir or settings.grid_dir, f"fleet {fleet_path}")
    order = _plan_order(plan_objective)
    arrivals = _arrivals(arrivals_spec, hours, rate_scale, requests, seed, start)
    run = SimRun(fleet, arrivals, grid, RouterConfig.from_settings(settings),
                 start.astimezone(UTC), hours, slo_s, order)
    result = run_compare(run, _names(strategy, compare))
    console = make_console()
    gaps = _report(console, run, result, gap)
    if plot_path is not None:
        from router.sim.plots import plot_series

        plot_series(result.series, plot_path, title=f"{fleet_path.name}: {len(arrivals):,} "
                    f"requests over {hours} h from {start:%Y-%m-%d %H:%MZ}")
        console.print(f"wrote {plot_path}")
    if output_path is not None:
        _write_json(output_path, result, gaps)
        console.print(f"wrote {output_path}")


def _plan_order(text: str) -> tuple[str, ...]:
    order, weights = _parse_objective(text)
    if weights:
        raise ConfigError(f"--objective {text!r}: the simulator's plan is lexicographic "
                          "(lex:cost,carbon,delay)")
    return tuple(order)


def _report(console: Any, run: Any, result: Any, gap: bool) -> list[Any]:
    """Print the table, its notes and, with ``gap``, the lower bound; return the gaps."""
    from router.sim.compare import carbon_bound, gaps_to, unpriced_zones
    from router.sim.metrics import cost_notes

    console.print(summary_table(result.summaries))
    for note in result.notes + cost_notes(result.summaries, unpriced_zones(run)):
        console.print(f"note: {note}")
    if not gap:
        return []
    bound = carbon_bound(run, result)
    console.print(f"LP lower bound on operational CO2e: {bound.value / 1000:.3f} kg (the same "
                  f"{bound.batches:,} batches, hours, zones and device-hours, a batch starting "
                  f"up to {bound.max_delay_s:.1f} s after routing as in these runs; no schedule "
                  f"can beat it; solved in {bound.solve_s:.2f} s)")
    gaps = gaps_to(bound, result.summaries)
    for g in gaps:
        console.print(f"{g.strategy}: {g.online_kg:.3f} kg vs LP lower bound "
                      f"{g.bound_kg:.3f} (gap {g.gap:+.1%})")
    return gaps


def _profiles_engine(fleet_path: Path, profiles_db: str | None, default_url: str) -> Any:
    if profiles_db is None and "bench:" not in fleet_path.read_text(encoding="utf-8"):
        return None
    from pipeline.ledger.db import make_engine

    return make_engine(profiles_db or default_url)


def _write_json(path: Path, result: Any, gaps: list[Any]) -> None:
    doc = {
        "strategies": [{**s.row(), "utilisation": s.utilisation} for s in result.summaries],
        "hourly": [{"strategy": s.strategy, "carbon_kg": s.carbon_kg.tolist(),
                    "p95_s": [None if np.isnan(v) else v for v in s.p95_s]}
                   for s in result.series],
        "carbon_gap": [{"strategy": g.strategy, "online_kg": g.online_kg,
                        "lp_bound_kg": g.bound_kg, "gap": g.gap} for g in gaps],
        "notes": result.notes,
        "energy": "estimated by the predictor from the fleet's profiles, not measured",
    }
    try:
        Path(path).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e}") from e


def _parse_objective(text: str) -> tuple[list[str], dict[str, float]]:
    """``lex:cost,carbon,delay`` -> (order, {}); ``weighted:carbon=1,cost=1`` -> ([], weights)."""
    kind, _, rest = text.partition(":")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if kind == "lex" and parts:
        return parts, {}
    if kind == "weighted" and parts:
        try:
            return [], {k.strip(): float(v) for k, _, v in (p.partition("=") for p in parts)}
        except ValueError as e:
            raise ConfigError(f"--objective {text!r}: weights must be NAME=NUMBER") from e
    raise ConfigError(f"--objective {text!r}: use lex:cost,carbon,delay or weighted:carbon=1,...")


@click.command()
@click.option("--sites", type=click.IntRange(min=1), default=50, show_default=True,
              help="Synthetic sites spread over the packaged grid zones.")
@click.option("--hours", type=click.IntRange(min=1), default=24, show_default=True,
              help="Hours of the plan.")
@click.option("--start", type=DeadlineType(), help="Hour 0 of the plan, ISO 8601 with a time "
              f"zone [default {DEFAULT_START}; with --devices the current hour].")
@click.option("--load", type=click.FloatRange(min=0, max=1), default=0.5, show_default=True,
              help="Mean demand as a fraction of the total capacity (a daily sine swing of "
              "+-30% around it).")
@click.option("--objective", default="lex:cost,carbon,delay", show_default=True,
              help="lex:A,B,C (lexicographic) or weighted:A=w,B=w over cost, carbon, delay, "
              "water.")
@click.option("--water-budget-l", type=click.FloatRange(min=0), help="Litres allowed in total.")
@click.option("--defer/--no-defer", default=False, help="Allow load to move to later hours.")
@click.option("--admm", "admm_weights", help="Also solve weighted:... by ADMM across sites and "
              "compare with the central LP, e.g. carbon=1,cost=1.")
@click.option("--pareto/--no-pareto", default=False, help="Search the Pareto front over cost, "
              "carbon, delay and water.")
@click.option("--method", type=click.Choice(["sweep", "nsga2"]), default="sweep", show_default=True,
              help="Pareto search: weighted-sum LP sweep, or NSGA-II over allocation and model "
              "choice (quality, TTFT, carbon, water, cost), compared with the sweep.")
@click.option("--models", "menu", type=click.Choice(["auto", "qwen3", "registry"]),
              default="auto", show_default=True,
              help="With --method nsga2, the model menu: qwen3 is a synthetic one (Qwen3 "
              "8B/14B/32B, quality a proxy); registry takes the --devices registry's served "
              "models with their quality scores and sources, speed and J/token relative to "
              "its first model from bench profiles (--profiles-db) where both have one, else "
              "estimated from nominal_tokens_per_s or the GGUF weight sizes; auto is registry "
              "when --devices serves more than one model, else qwen3.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the synthetic sites (and of poisson:RATE arrivals).")
@click.option("--devices", "registry_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="A live device registry (TOML): plan its devices, one site "
              "per grid zone and cooling (PUE, WUE), instead of synthetic sites.")
@click.option("--plan-out", type=click.Path(dir_okay=False, path_type=Path),
              help="With --devices: write the plan as JSON for the live router "
              "(ECOBATCH_STRATEGY=optimal, ECOBATCH_PLAN_FILE).")
@click.option("--pick", type=click.IntRange(min=0), help="With --pareto, --devices and "
              "--plan-out: write the plan of this row of the printed front (its 'row' column) "
              "instead of the --objective LP's, for the router to follow.")
@click.option("--tokens-per-hour", type=click.FloatRange(min=0, min_open=True),
              help="With --devices: demand in tokens (prompt + generated) every hour; default: "
              "the --arrivals trace's tokens per hour.")
@arrivals_options("With --devices, the requests giving the mean request size (and the "
                  "demand without --tokens-per-hour). ")
@click.option("--batch-size", type=click.IntRange(min=1), help="With --devices: prompts per "
              "batch the router cuts at [default ECOBATCH_BATCH_SIZE, 4].")
@click.option("--profiles-db", help="With --devices: database with `ecobatch bench` profiles; "
              "without it the registry's nominal figures are used.")
@click.option("--carbon", "carbon_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of your own grid files that adds zones to (and may override) the "
              "packaged 2024 traces: Electricity Maps hourly CSV, price CSV, Open-Meteo JSON "
              "named <ZONE>_<YEAR>[_...].csv/.json, or grid_<ZONE>.csv [default: "
              "ECOBATCH_GRID_DIR].")
@handle_errors
def optimise(sites: int, hours: int, start: datetime | None, load: float, objective: str,
             water_budget_l: float | None, defer: bool, admm_weights: str | None, pareto: bool,
             method: str, menu: str, seed: int, registry_path: Path | None,
             plan_out: Path | None, pick: int | None, carbon_dir: Path | None,
             **demand_opts: Any) -> None:
    """Allocate token load to sites and hours by LP (HiGHS); optionally by ADMM and Pareto.

    With --devices the sites are a live registry's and --plan-out writes the plan the router
    follows with the optimal strategy: the --objective LP's, or with --pareto --pick ROW the
    front point of that row (by NSGA-II: its sites' shares; its model mix is left to each
    job's quality floor).
    """
    from router.allocation.lp import solve_lexicographic, solve_weighted
    from router.sim.scenario import build_scenario

    if plan_out is not None and registry_path is None:
        raise ConfigError("--plan-out needs --devices: a plan names the registry's devices")
    if pick is not None and not (pareto and plan_out is not None):
        raise ConfigError("--pick needs --pareto and --plan-out: it picks the front point "
                          "whose plan is written")
    if menu == "registry" and registry_path is None:
        raise ConfigError("--models registry needs --devices: the menu is that registry's "
                          "served models")
    grid_dir = carbon_dir or build_settings().grid_dir
    grid = GridData(grid_dir)
    if registry_path is not None:
        start = (start or _this_hour()).astimezone(UTC)
        planned = _registry_plan(registry_path, hours, grid_dir, seed=seed,
                                 menu=menu if pareto and method == "nsga2" else "qwen3",
                                 **demand_opts)
    else:
        start = (start or datetime.fromisoformat(DEFAULT_START)).astimezone(UTC)
        planned = _synthetic_plan(sites, seed, load, hours)
    sc, notes = build_scenario(planned.specs, planned.demand, grid, start,
                               water_budget_l=water_budget_l, allow_defer=defer)
    order, weights = _parse_objective(objective)
    alloc = solve_lexicographic(sc, order) if order else solve_weighted(sc, weights)
    console = make_console()
    for note in notes:
        console.print(f"note: {note}")
    o = alloc.objectives
    console.print(f"LP {len(planned.specs)} sites x {hours} h ({objective}): {alloc.solves} "
                  f"solve(s) in {alloc.solve_s:.3f} s; cost {o['cost']:.2f} USD, carbon "
                  f"{o['carbon'] / 1000:.1f} kgCO2e, water {o['water']:.0f} L, delay "
                  f"{o['delay'] / max(float(planned.demand.sum()), 1):.3f} s/token")
    if plan_out is not None and pick is None:
        _save(plan_out, alloc.site_shares(), alloc.objectives, planned, start, objective)
        console.print(f"wrote {plan_out}: follow it with ECOBATCH_STRATEGY=optimal "
                      f"ECOBATCH_PLAN_FILE={plan_out}")
    if admm_weights:
        _report_admm(console, sc, _parse_objective("weighted:" + admm_weights)[1])
    if pareto:
        from pipeline.app.cli.pareto import report_nsga2

        rows = (report_nsga2(console, sc, seed, planned.menu) if method == "nsga2"
                else _report_pareto(console, sc, seed))
        if plan_out is not None and pick is not None:
            if pick >= len(rows):
                raise ConfigError(f"--pick {pick}: the front has rows 0 to {len(rows) - 1}")
            _save(plan_out, rows[pick].shares, rows[pick].objectives, planned, start,
                  f"pareto:{method} row {pick}")
            console.print(f"wrote {plan_out} (front row {pick}): follow it with "
                          f"ECOBATCH_STRATEGY=optimal ECOBATCH_PLAN_FILE={plan_out}")


@dataclass(frozen=True)
class _Sites:
    """Sites and hourly demand (tokens); for a live registry, each device's site index."""

    specs: list[Any]
    demand: Any
    site_of: dict[str, int]
    menu: Any = None  # the registry's model menu for NSGA-II; None: the Qwen3 one


def _synthetic_plan(n_sites: int, seed: int, load: float, hours: int) -> _Sites:
    """Synthetic sites, demand ``load`` x capacity with a daily sine swing of +-30%."""
    from router.sim.scenario import synthetic_sites

    specs = synthetic_sites(n_sites, seed)
    swing = 1 + 0.3 * np.sin(np.arange(hours) / 24 * 2 * np.pi)
    return _Sites(specs, _capacity_per_h(specs) * load * swing, {})


def _capacity_per_h(specs: list[Any]) -> float:
    return float(sum(s.count * s.tokens_per_s * 3600.0 for s in specs))


def _this_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _registry_plan(path: Path, hours: int, grid_dir: Path | None, *, seed: int, menu: str,
                   tokens_per_hour: float | None, arrivals_spec: str, rate_scale: float,
                   requests: int | None, batch_size: int | None,
                   profiles_db: str | None) -> _Sites:
    """Sites of the registry at ``path`` with capacity predicted as the router predicts, the
    demand, and (``menu`` registry, or auto with several served models) its model menu;
    raises ConfigError when the demand exceeds every site's capacity together."""
    from pipeline.fleet.devices import load_registry
    from router.live.batching import effective_batch_size
    from router.predict.nominal import NominalPredictor
    from router.sim.scenario import hourly_tokens, mean_batch, registry_sites

    registry = load_registry(path)
    offline_grid(registry, grid_dir, f"device registry {path}")
    size = effective_batch_size(build_settings(batch_size=batch_size).batch_size, registry)
    predictor: Any = NominalPredictor()
    if profiles_db is not None:
        from pipeline.ledger.db import make_engine
        from router.predict.profiled import load_predictor

        predictor = load_predictor(make_engine(profiles_db), registry)
    arrivals = _arrivals(arrivals_spec, hours, rate_scale, requests, seed)
    specs, members = registry_sites(registry, predictor, mean_batch(arrivals, size))
    demand = (np.full(hours, tokens_per_hour) if tokens_per_hour is not None
              else hourly_tokens(arrivals, hours))
    capacity = _capacity_per_h(specs)
    if float(demand.max()) > capacity:
        raise ConfigError(f"demand peaks at {float(demand.max()):,.0f} tokens/h but the devices "
                          f"of {path} serve at most {capacity:,.0f} tokens/h at batch size "
                          f"{size}; lower --tokens-per-hour, --requests or --rate-scale")
    site_of = {name: i for i, names in enumerate(members) for name in names}
    return _Sites(specs, demand, site_of,
                  _registry_menu(registry, members, mean_batch(arrivals, size), menu,
                                 profiles_db))


def _registry_menu(registry: Any, members: list[list[str]], shape: Any, menu: str,
                   profiles_db: str | None) -> Any:
    """The registry's model menu, or None for the Qwen3 one."""
    from router.sim.modelmenu import registry_menu, served_model_count

    default_model = build_settings().model
    if menu == "qwen3" or (menu == "auto" and served_model_count(registry, default_model) < 2):
        return None
    profiles = None
    if profiles_db is not None:
        from pipeline.ledger.db import make_engine
        from router.sim.modelmenu import load_menu_profiles

        profiles = load_menu_profiles(make_engine(profiles_db), registry, default_model)
    return registry_menu(registry, members, shape, profiles, default_model)


def _save(path: Path, shares: Any, objectives: dict[str, float], planned: _Sites,
          start: datetime, objective: str) -> None:
    from router.allocation.allocation_file import save_plan

    save_plan(path, shares, planned.site_of, start, site_names=[s.name for s in planned.specs],
              objective=objective, objectives=objectives)


def _report_admm(console: Any, sc: Any, weights: dict[str, float]) -> None:
    from router.allocation.admm import solve_admm
    from router.allocation.lp import objective_scales, solve_weighted

    central = solve_weighted(sc, weights)
    scales = objective_scales(sc, names=[k for k, w in weights.items() if w > 0])
    best = sum(w * central.objectives[k] / scales[k] for k, w in weights.items() if w > 0)
    res = solve_admm(sc, weights)
    console.print(f"ADMM: {res.iterations} iterations in {res.solve_s:.2f} s, primal residual "
                  f"{res.primal_residual:.2e}, dual residual {res.dual_residual:.2e}; objective "
                  f"{res.objective:.6f} vs central {best:.6f} "
                  f"({(res.objective - best) / best:+.3%})")


def _report_pareto(console: Any, sc: Any, seed: int) -> list[Any]:
    """Print the LP sweep's front, lowest carbon first; return its rows as plans."""
    from pipeline.app.cli.pareto import FrontPoint
    from router.allocation.pareto import pareto_front

    front = pareto_front(sc, seed=seed)
    table = Table(title=f"Pareto front: {len(front.points)} points, {front.solves} LPs in "
                  f"{front.solve_s:.2f} s")
    for col in ("row", "cost USD", "carbon kg", "delay s/token", "water L", "weights"):
        table.add_column(col, justify="right")
    total = max(float(sc.demand.sum()), 1.0)
    points = sorted(front.points, key=lambda p: p.objectives["carbon"])
    for row, p in enumerate(points):
        o = p.objectives
        table.add_row(str(row), f"{o['cost']:.2f}", f"{o['carbon'] / 1000:.1f}",
                      f"{o['delay'] / total:.4f}", f"{o['water']:.0f}",
                      ",".join(f"{k}={v:.2f}" for k, v in p.weights.items() if v))
    console.print(table)
    return [FrontPoint(p.allocation.site_shares(), dict(p.objectives)) for p in points]
