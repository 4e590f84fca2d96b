"""The fleet simulator: arrivals, fleet files, the event loop (determinism, conservation)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import GridTrace
from pipeline.settings import Settings
from router.config import RouterConfig
from router.predict.predictor import BatchShape
from router.scoring.classoptions import DeviceClasses
from router.scoring.options import grid_now, options_for
from router.scoring.strategies import get_strategy
from router.sim.arrivals import Arrivals, poisson, read_trace, replay, scale_for_requests
from router.sim.events import simulate
from router.sim.fleet import load_fleet, mlenergy_rows
from router.sim.metrics import hourly, summarise

START = datetime(2024, 6, 1, tzinfo=UTC)
EDGE = Path(__file__).parents[2] / "examples" / "edge_cluster.toml"
FLEET = Path(__file__).parents[2] / "examples" / "fleet.toml"


def test_packaged_trace_and_rate_scaling() -> None:
    trace = read_trace()
    assert len(trace) > 19_000 and trace.t_s[0] == 0.0 and np.all(np.diff(trace.t_s) >= 0)
    doubled = replay(trace, 1.0, rate_scale=2.0)
    assert len(doubled) == pytest.approx(2 * len(trace) * 3600 / trace.span_s, rel=0.01)
    assert doubled.t_s[-1] < 3600.0
    scale = scale_for_requests(trace, 3.0, 30_000)
    assert len(replay(trace, 3.0, scale)) == pytest.approx(30_000, rel=0.02)


def test_bad_trace_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.68,10,5\n2023-11-16 18:15:47.00,ten,5\n")
    with pytest.raises(ConfigError, match="line 3"):
        read_trace(bad)


def test_poisson_is_seeded() -> None:
    a, b = poisson(2.0, 0.5, seed=4), poisson(2.0, 0.5, seed=4)
    assert np.array_equal(a.t_s, b.t_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert len(a) == pytest.approx(3600, rel=0.1)
    assert not np.array_equal(a.t_s[:50], poisson(2.0, 0.5, seed=5).t_s[:50])


def test_fleet_file_expands_counts_and_fits_profiles() -> None:
    fleet = load_fleet(FLEET)
    assert len(fleet.registry.devices) == 100
    h100 = fleet.registry.get("h100-ca-001")
    pred = fleet.predictor.predict(h100, BatchShape(8, 8000, 1600))
    assert pred.source == "profile"
    assert fleet.predictor.predict(fleet.registry.get("orin-de-020"),
                                   BatchShape(4, 400, 400)).source == "nominal"
    assert {r.batch_size for r in mlenergy_rows("qwen3-8b", "H100")} >= {8, 16, 64}


def test_fleet_errors_name_the_table(tmp_path: Path) -> None:
    bad = tmp_path / "f.toml"
    bad.write_text('[[device]]\nname = "a"\nkind = "gpu"\n')
    with pytest.raises(ConfigError, match="device #1 field 'kind'"):
        load_fleet(bad)
    bad.write_text('[[device]]\nname = "a"\nkind = "cpu"\nzone = "GB"\nprofile = "magic"\n')
    with pytest.raises(ConfigError, match="unknown profile"):
        load_fleet(bad)


def test_class_options_equal_live_options() -> None:
    fleet = load_fleet(FLEET)
    classes = DeviceClasses.of([c.members for c in fleet.classes])
    zones = grid_now(GridTrace(), fleet.registry.devices, START)
    backlog = {d.name: float(k % 7) for k, d in enumerate(fleet.registry.devices)}
    shape = BatchShape(8, 8 * 900, 8 * 200)
    need = fleet.memory_need()
    fast = classes.options(shape, fleet.predictor, zones, backlog, memory_need=need)
    live = options_for(fleet.registry, shape, fleet.predictor, zones, backlog, memory_need=need)
    assert fast == live


def small_run(strategy: str, settings: Settings | None = None):  # type: ignore[no-untyped-def]
    fleet = load_fleet(EDGE)
    arrivals = poisson(0.05, 1.0, seed=11)
    settings = settings or Settings(batch_size=4, max_wait_s=2.0, slo_s=120.0)
    return simulate(fleet, arrivals, GridTrace(), get_strategy(strategy),
                    RouterConfig.from_settings(settings), START)


@pytest.mark.parametrize("strategy", ["greedy", "carbon", "latency", "weighted", "round_robin"])
def test_deterministic_and_every_request_once(strategy: str) -> None:
    a, b = small_run(strategy), small_run(strategy)
    assert np.array_equal(a.finish_s, b.finish_s, equal_nan=True)
    assert a.batches.device == b.batches.device
    served = ~np.isnan(a.finish_s)
    # Conservation: each request served once (in exactly one batch) or counted as missed.
    assert sum(a.batches.size) == served.sum()
    assert served.sum() + sum(a.missed.values()) == a.arrival_s.size
    assert np.all(a.finish_s[served] >= a.arrival_s[served])


def test_memory_limit_counts_missed_requests(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.toml"
    tiny.write_text('[[device]]\nname = "t"\nkind = "jetson"\nzone = "GB"\nmemory_gb = 5.0\n'
                    'model_gb = 4.9\nkv_kib_per_token = 128\n')
    fleet = load_fleet(tiny)
    arrivals = Arrivals(np.array([0.0, 1.0]), np.array([10, 5000]), np.array([10, 10]))
    out = simulate(fleet, arrivals, GridTrace(), get_strategy("carbon"),
                   RouterConfig.from_settings(Settings(batch_size=1, max_wait_s=0.5)), START)
    assert out.missed and sum(out.missed.values()) == 1
    assert np.isnan(out.finish_s[1]) and not np.isnan(out.finish_s[0])


def test_summary_and_series() -> None:
    out = small_run("latency")
    s = summarise(out, slo_s=60.0, horizon_s=3600.0)
    assert s.served == out.arrival_s.size and s.missed == 0
    assert s.energy_kwh > 0 and s.carbon_kg > 0 and s.water_l >= 0
    assert s.p50_s <= s.p95_s <= s.p99_s
    assert set(s.utilisation) == {"orin-nx", "ada2000"}
    series = hourly(out, 1)
    assert series.carbon_kg.sum() == pytest.approx(s.carbon_kg)


def test_partial_batches_wait_for_max_wait() -> None:
    fleet = load_fleet(EDGE)
    arrivals = Arrivals(np.array([0.0]), np.array([10]), np.array([10]))
    settings = Settings(batch_size=4, max_wait_s=3.0, router_interval_s=0.25)
    out = simulate(fleet, arrivals, GridTrace(), get_strategy("greedy"),
                   RouterConfig.from_settings(settings), START)
    assert out.batches.start_s == [3.0]
    assert Registry(devices=[Device(name="x", kind="cpu", zone="DE-LU")])  # registry format unchanged
