"""``ecobatch simulate --carbon DIR`` and ``optimise --carbon DIR``: the folder holds files in
the publishers' layouts, adds to the packaged zones, and a blank cell is a missing value."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from pipeline.app.cli.main import main
from pipeline.grid.trace import GridTrace
from tests.gridfiles import packaged_layout_rows, write_em_csv, write_rows

START = "2024-06-03T00:00Z"
FLEET = """
[[device]]
name = "gb"
kind = "cpu"
zone = "GB"
max_batch_size = 4
nominal_tokens_per_s = 400.0

[[device]]
name = "sg"
kind = "cpu"
zone = "SG"
max_batch_size = 4
nominal_tokens_per_s = 400.0
"""


def simulate(tmp_path: Path, carbon_dir: Path, fleet: str = FLEET) -> tuple[int, str, dict]:
    path, out = tmp_path / "fleet.toml", tmp_path / "sim.json"
    path.write_text(fleet, encoding="utf-8")
    result = CliRunner().invoke(main, [
        "simulate", "--devices", str(path), "--carbon", str(carbon_dir), "--start", START,
        "--arrivals", "poisson:0.2", "--hours", "2", "--seed", "1", "--strategy", "carbon",
        "--batch-size", "4", "-o", str(out)])
    doc = json.loads(out.read_text()) if result.exit_code == 0 else {}
    return result.exit_code, result.output, doc


def test_an_electricity_maps_export_adds_a_zone_to_the_packaged_ones(tmp_path: Path) -> None:
    folder = tmp_path / "grid"
    folder.mkdir()
    # SG at 10 g/kWh, far below GB's 2024 trace: the carbon strategy sends everything there
    write_em_csv(folder / "SG_2024_hourly.csv", "SG", datetime(2024, 6, 3), [10.0] * 24)
    code, output, doc = simulate(tmp_path, folder)
    assert code == 0, output  # GB still comes from the packaged data
    util = doc["strategies"][0]["utilisation"]
    assert util["sg"] > 0 and util["gb"] == 0


def test_the_packaged_layout_with_a_blank_temperature_reads_as_missing(tmp_path: Path) -> None:
    folder = tmp_path / "grid"
    folder.mkdir()
    rows = packaged_layout_rows(lambda k: k % 2 == 1)  # every other hour without temperature
    write_rows(folder / "grid_SG.csv", rows)
    code, output, _ = simulate(tmp_path, folder)
    assert code == 0, output
    carbon_6 = GridTrace().trace("GB").carbon_g_per_kwh[6]
    rows[7] = rows[7].replace(f",{carbon_6},", ",n/a,")
    write_rows(folder / "grid_SG.csv", rows)
    code, output, _ = simulate(tmp_path, folder)
    assert code != 0
    assert "grid_SG.csv line 8: could not convert string to float: 'n/a'" in " ".join(
        output.split())


def test_a_fleet_zone_without_data_is_named_with_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "grid"
    empty.mkdir()
    code, output, _ = simulate(tmp_path, empty)
    text = " ".join(output.split())
    assert code != 0
    assert "device 'sg': grid zone 'SG' has no carbon data" in text and "SG_<YEAR>" in text
