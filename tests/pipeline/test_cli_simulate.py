"""``ecobatch simulate`` and ``ecobatch optimise`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.app.cli.main import main

EDGE = Path(__file__).parents[2] / "examples" / "edge_cluster.toml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_simulate_compare_writes_table_png_and_json(tmp_path: Path) -> None:
    png, out = tmp_path / "sim.png", tmp_path / "sim.json"
    result = CliRunner().invoke(main, [
        "simulate", "--devices", str(EDGE), "--arrivals", "poisson:0.05", "--hours", "2",
        "--seed", "3", "--compare", "greedy,carbon,latency,optimal", "--batch-size", "4",
        "--slo-s", "120", "--plot", str(png), "-o", str(out), "--gap"])
    assert result.exit_code == 0, result.output
    assert "greedy" in result.output and "optimal" in result.output
    assert "gap" in result.output
    assert png.read_bytes()[:8] == PNG_MAGIC
    doc = json.loads(out.read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["greedy", "carbon", "latency", "optimal"]
    assert all(s["served"] + s["missed"] == s["requests"] for s in doc["strategies"])
    assert set(doc["strategies"][0]["utilisation"]) == {"orin-nx", "ada2000"}
    gaps = doc["carbon_gap"]
    assert [g["strategy"] for g in gaps] == ["greedy", "carbon", "latency", "optimal"]
    assert all(g["online_kg"] >= g["lp_bound_kg"] * (1 - 1e-6) for g in gaps)


def test_simulate_is_deterministic(tmp_path: Path) -> None:
    outs = []
    for k in range(2):
        out = tmp_path / f"{k}.json"
        result = CliRunner().invoke(main, [
            "simulate", "--devices", str(EDGE), "--arrivals", "poisson:0.05", "--hours", "1",
            "--seed", "9", "--strategy", "weighted", "-o", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(json.loads(out.read_text())["strategies"][0])
    for o in outs:
        o.pop("wall_s")
    assert outs[0] == outs[1]


def test_simulate_bad_arrivals_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["simulate", "--devices", str(EDGE), "--arrivals",
                                       "poisson:fast"])
    assert result.exit_code != 0
    assert "poisson:RATE_PER_S" in result.output


def test_optimise_lp_admm_pareto() -> None:
    result = CliRunner().invoke(main, ["optimise", "--sites", "6", "--hours", "4",
                                       "--admm", "carbon=1,cost=1", "--pareto"])
    assert result.exit_code == 0, result.output
    assert "LP 6 sites x 4 h" in result.output
    assert "ADMM:" in result.output and "residual" in result.output
    assert "Pareto front" in result.output
