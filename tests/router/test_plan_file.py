"""Plan files: written by `ecobatch optimise --plan-out`, followed by the live router."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine

from pipeline.app.cli.main import main
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Registry
from pipeline.settings import Settings, load_settings
from router.allocation.allocation_file import read_plan, save_plan
from router.config import RouterConfig
from router.live.route import route_once
from router.predict.nominal import NominalPredictor
from router.scoring.following import PlanStrategy, load_plan
from router.scoring.strategies import get_strategy
from tests.router.conftest import FixedCarbon, seed_job
from tests.router.test_route import Recorder, batches

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SHARES = np.array([[0.75, 0.5], [0.25, 0.5]])
SITE_OF = {"gpu": 0, "edge": 1}


def write(tmp_path: Path, shares: Any = SHARES, site_of: dict[str, int] | None = None) -> Path:
    path = tmp_path / "plan.json"
    save_plan(path, np.asarray(shares), site_of or SITE_OF, START, site_names=["A", "B"],
              objective="lex:cost,carbon,delay", objectives={"carbon": 12.5, "cost": 0.5},
              created_at=datetime(2025, 6, 1, 11, 0, tzinfo=UTC))
    return path


def test_round_trip_keeps_shares_sites_and_record(tmp_path: Path) -> None:
    path = write(tmp_path)
    doc = read_plan(path)
    assert [s.name for s in doc.sites] == ["A", "B"]
    assert doc.objective == "lex:cost,carbon,delay" and doc.objectives["carbon"] == 12.5
    assert doc.created_at == datetime(2025, 6, 1, 11, 0, tzinfo=UTC) and doc.hours == 2
    strategy = load_plan(path)
    assert isinstance(strategy, PlanStrategy) and strategy.name == "optimal"
    assert np.array_equal(strategy.shares, SHARES)
    assert strategy.site_of == SITE_OF and strategy.start == START


def mutated(tmp_path: Path, change: Any) -> Path:
    path = write(tmp_path)
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("start"), "start: Field required"),
    (lambda r: r.update(start="2025-06-01T12:00"), "start: Input should have timezone"),
    (lambda r: r["sites"][0]["shares"].__setitem__(1, 1.5), "sites.0.shares.1"),
    (lambda r: r["sites"][1]["shares"].append(0.0), "sites.1.shares: 3 hours"),
    (lambda r: r["sites"][1]["devices"].append("gpu"), "sites.1.devices: 'gpu' is already"),
    (lambda r: r["sites"][1]["shares"].__setitem__(0, 0.5), "sites.*.shares.0: hour 0"),
    (lambda r: r.update(sites=[]), "sites: List should have at least 1 item"),
    (lambda r: r.update(version=2), "version: Input should be 1"),
    (lambda r: r["sites"][0].update(weight=1), "sites.0.weight: Extra inputs"),
])
def test_bad_plan_names_the_file_and_field(tmp_path: Path, change: Any, message: str) -> None:
    path = mutated(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    assert str(err.value).startswith(f"plan file {path}: ")
    assert message in str(err.value)


def test_unreadable_plans_and_bad_saves(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plan file .*missing\.json: cannot read"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not JSON"):
        load_plan(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="'cpu' is in site 5"):
        write(tmp_path, site_of={"cpu": 5})
    with pytest.raises(ConfigError, match=r"sites\.0\.shares\.0"):
        write(tmp_path, shares=[[-0.5, 1.0], [1.5, 0.0]])


def test_optimal_needs_a_plan_file(tmp_path: Path) -> None:
    assert load_settings(strategy="optimal").strategy == "optimal"
    with pytest.raises(ConfigError, match="'optimal' needs a plan file: set ECOBATCH_PLAN_FILE"):
        get_strategy("optimal")
    path = write(tmp_path)
    settings = load_settings(strategy="optimal", plan_file=path)
    assert isinstance(get_strategy("optimal", plan_file=settings.plan_file), PlanStrategy)


@pytest.mark.service
def test_live_router_follows_the_plan_3_to_1(
    tmp_path: Path, engine: Engine, rclient: redis.Redis, registry: Registry,
    carbon: FixedCarbon,
) -> None:
    path = write(tmp_path, shares=[[0.75], [0.25]])
    seed_job(engine, rclient, "j1", 32, enqueued_unix_s=START.timestamp() - 5)
    settings = Settings(batch_size=4, strategy="optimal", plan_file=path)
    report = route_once(RouterConfig.from_settings(settings), engine, rclient, registry,
                        NominalPredictor(), carbon, Recorder(engine), START)
    assert report.batches == 8
    assert Counter(b.device for b in batches(engine)) == {"gpu": 6, "edge": 2}
    assert {b.strategy for b in batches(engine)} == {"optimal"}


@pytest.mark.service
def test_live_router_without_plan_file_is_a_config_error(
    engine: Engine, rclient: redis.Redis, registry: Registry, carbon: FixedCarbon,
) -> None:
    with pytest.raises(ConfigError, match="ECOBATCH_PLAN_FILE"):
        route_once(RouterConfig.from_settings(Settings(strategy="optimal")), engine, rclient,
                   registry, NominalPredictor(), carbon, Recorder(engine), START)


REGISTRY = """
[[device]]
name = "ada"
kind = "nvidia"
zone = "DE-LU"
nominal_tokens_per_s = 30.0
tdp_w = 70.0

[[device]]
name = "orin"
kind = "jetson"
zone = "DE-LU"
nominal_tokens_per_s = 12.0
tdp_w = 20.0

[[device]]
name = "h100"
kind = "nvidia"
zone = "GB"
pue = 1.3
nominal_tokens_per_s = 90.0
tdp_w = 700.0
"""


def test_optimise_writes_a_plan_the_router_loads(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY)
    out = tmp_path / "plan.json"
    args = ["optimise", "--devices", str(reg), "--plan-out", str(out), "--hours", "6",
            "--start", "2024-06-01T00:00Z", "--tokens-per-hour", "200000",
            "--objective", "lex:carbon,cost"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "LP 2 sites x 6 h" in res.output and f"wrote {out}" in res.output
    doc = read_plan(out)
    assert [s.name for s in doc.sites] == ["DE-LU", "GB"]
    assert doc.sites[0].devices == ["ada", "orin"] and doc.sites[1].devices == ["h100"]
    assert doc.objective == "lex:carbon,cost"
    assert doc.start == datetime(2024, 6, 1, tzinfo=UTC)
    strategy = load_plan(out)
    assert strategy.shares.shape == (2, 6)
    assert np.allclose(strategy.shares.sum(axis=0), 1.0)


def test_optimise_plan_errors(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY)
    res = CliRunner().invoke(main, ["optimise", "--plan-out", str(tmp_path / "p.json")])
    assert res.exit_code != 0 and "--plan-out needs --devices" in res.output
    res = CliRunner().invoke(main, ["optimise", "--devices", str(reg), "--tokens-per-hour",
                                    "1e12", "--hours", "2"])
    assert res.exit_code != 0 and "serve at most" in res.output


def _pick(tmp_path: Path, method: str, row: str) -> tuple[Any, Path]:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY)
    out = tmp_path / f"plan-{method}-{row}.json"
    args = ["optimise", "--devices", str(reg), "--plan-out", str(out), "--hours", "6",
            "--start", "2024-06-01T00:00Z", "--tokens-per-hour", "200000", "--pareto",
            "--method", method, "--pick", row]
    return CliRunner().invoke(main, args), out


@pytest.mark.service
def test_the_router_follows_a_point_picked_from_the_front(
    tmp_path: Path, engine: Engine, rclient: redis.Redis,
) -> None:
    res, out = _pick(tmp_path, "sweep", "0")  # row 0: the sweep's lowest-carbon point
    assert res.exit_code == 0, res.output
    assert f"wrote {out} (front row 0)" in res.output
    doc = read_plan(out)
    assert doc.objective == "pareto:sweep row 0" and "carbon" in doc.objectives
    shares = load_plan(out).shares
    assert np.allclose(shares.sum(axis=0), 1.0)
    registry = Registry.model_validate({"devices": tomllib.loads(REGISTRY)["device"]})
    seed_job(engine, rclient, "j1", 40, enqueued_unix_s=doc.start.timestamp() - 5)
    settings = Settings(batch_size=4, strategy="optimal", plan_file=out)
    route_once(RouterConfig.from_settings(settings), engine, rclient, registry,
               NominalPredictor(), FixedCarbon({"DE-LU": 300.0, "GB": 200.0}),
               Recorder(engine), doc.start)
    by_site = Counter("GB" if b.device == "h100" else "DE-LU" for b in batches(engine))
    assert sum(by_site.values()) == 10
    assert abs(by_site["DE-LU"] - 10 * shares[0, 0]) <= 1  # the picked point's hour-0 split


def test_pick_needs_a_front_and_a_plan_and_a_row_that_exists(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["optimise", "--pick", "0"])
    assert res.exit_code != 0 and "--pick needs --pareto and --plan-out" in res.output
    res, _ = _pick(tmp_path, "sweep", "999")
    assert res.exit_code != 0 and "--pick 999: the front has rows 0 to" in res.output


@pytest.mark.slow
def test_a_picked_nsga2_point_is_written_as_a_plan(tmp_path: Path) -> None:
    res, out = _pick(tmp_path, "nsga2", "3")
    assert res.exit_code == 0, res.output
    doc = read_plan(out)
    assert doc.objective == "pareto:nsga2 row 3"
    assert {"quality", "ttft_s", "carbon", "water", "cost"} <= doc.objectives.keys()
    assert np.allclose(load_plan(out).shares.sum(axis=0), 1.0)
