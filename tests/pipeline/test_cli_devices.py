"""``ecobatch devices`` and ``ecobatch bench`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlmodel import col, select

from pipeline.app.cli.devices import bench, devices, parse_batch_sizes
from pipeline.fleet.devices import detect_local
from pipeline.ledger.db import make_engine, session_scope
from pipeline.ledger.models import DeviceProfile
from workers.bench.run import ProfileRow, store_profile

REGISTRY = """
[[device]]
name = "ada2000"
kind = "nvidia"
index = 0
memory_gb = 16.0
tdp_w = 70.0
zone = "DE-LU"
n_gpu_layers = -1
max_batch_size = 16

[[device]]
name = "edge-cpu"
kind = "cpu"
memory_gb = 8.0
tdp_w = 20.0
zone = "GB"
max_batch_size = 4
"""

# Isolate from the developer's environment; a wide terminal keeps rich from folding cells.
ENV = {"ECOBATCH_DEVICES": None, "ECOBATCH_DATABASE_URL": None, "ECOBATCH_MODEL": None,
       "ECOBATCH_LATENCY_TARGET_S": None, "COLUMNS": "250"}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A two-device TOML registry: an NVIDIA card (absent here) and a small CPU box."""
    path = tmp_path / "devices.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return path


def invoke(command: object, args: list[str]) -> Result:
    return CliRunner().invoke(command, args, env=ENV)  # type: ignore[arg-type]


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes(None, None, "1, 2,4,2") == [1, 2, 4]


def test_devices_without_registry_lists_the_local_machine(sqlite_url: str) -> None:
    result = invoke(devices, ["--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    local = detect_local()[0]
    assert local.name in result.output and local.kind in result.output
    assert "nominal (no profile)" in result.output
    if local.kind == "cpu":
        assert "estimated" in result.output


def test_devices_with_registry_and_profile(registry: Path, sqlite_url: str) -> None:
    row = ProfileRow(batch_size=2, repeats=1, n_batches=2, prompt_tokens=20.0,
                     completion_tokens=16.0, ttft_s=0.1, latency_s=0.5, tokens_per_s=32.0,
                     energy_j=5.0, j_per_token=0.3125, avg_power_w=10.0, peak_memory_bytes=1,
                     energy_source="estimate:tdp*cpu-util", energy_measured=False)
    store_profile(make_engine(sqlite_url), "edge-cpu", "m.gguf", [row])
    result = invoke(devices, ["--devices", str(registry), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    devices_part = result.output.split("grid now")[0]
    lines = {line.split()[1]: line for line in devices_part.splitlines()
             if line.startswith("│") and len(line.split()) > 1}
    assert {"ada2000", "edge-cpu"} <= lines.keys()
    assert "nvidia" in lines["ada2000"] and "DE-LU" in lines["ada2000"]
    assert "nominal (no profile)" in lines["ada2000"]
    assert "profiled (1 batch sizes" in lines["edge-cpu"] and "GB" in lines["edge-cpu"]
    assert "estimated" in lines["edge-cpu"]
    assert lines["edge-cpu"].rstrip(" │").endswith("2")


def test_every_option_names_its_units() -> None:
    bench_help = " ".join(invoke(bench, ["--help"]).output.split())
    for unit in ("prompts per batch", "in tokens", "(count)", "J/token", "tokens/s"):
        assert unit in bench_help
    assert "seconds" in invoke(devices, ["--help"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "nope"], "unknown device 'nope' (known: ada2000, edge-cpu)"),
        (["--device", "edge-cpu", "--batch-sizes", "0"], "'0' is not a positive integer"),
        (["--device", "edge-cpu", "--batch-sizes", "1,x"], "'x' is not a positive integer"),
        (["--device", "edge-cpu", "--batch-sizes", "2,8"],
         "batch size 8 exceeds max_batch_size 4 of device 'edge-cpu'"),
        ([], "several devices; choose one with --device"),
        (["--device", "edge-cpu", "--model", "/nonexistent.gguf"], "does not exist"),
    ],
)
def test_bench_refuses_bad_input(registry: Path, sqlite_url: str, args: list[str],
                                 message: str) -> None:
    result = invoke(bench, ["--devices", str(registry), "--database-url", sqlite_url, *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_bench_runs_stores_and_plots(registry: Path, sqlite_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is two plus two?\nName a colour.\nWhy is snow white?\n", "utf-8")
    png = tmp_path / "profile.png"
    result = invoke(bench, [
        "--devices", str(registry), "--device", "edge-cpu", "--database-url", sqlite_url,
        "--batch-sizes", "1,2", "--max-tokens", "4", "--repeats", "1",
        "--prompts", str(prompts), "--plot", str(png),
    ])
    assert result.exit_code == 0, result.output
    assert "stored profile of edge-cpu" in result.output
    assert "estimated: TDP x CPU utilisation" in result.output
    assert png.read_bytes().startswith(b"\x89PNG")
    with session_scope(make_engine(sqlite_url)) as s:
        rows = s.exec(select(DeviceProfile).order_by(col(DeviceProfile.batch_size))).all()
    assert [(r.device, r.batch_size) for r in rows] == [("edge-cpu", 1), ("edge-cpu", 2)]
    assert all(r.model.endswith(".gguf") and r.tokens_per_s > 0 for r in rows)
    listing = invoke(devices, ["--devices", str(registry), "--database-url", sqlite_url])
    assert "profiled (2 batch sizes" in listing.output


def test_devices_lists_each_served_model_with_its_quality_and_source(tmp_path: Path,
                                                                     sqlite_url: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "box"\nkind = "cpu"\nzone = "GB"\n'
                    'models = ["smollm2-135m-instruct", "gemma3-270m"]\n', encoding="utf-8")
    result = invoke(devices, ["--devices", str(path), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    models = " ".join(result.output.split("models")[-1].split())
    assert "smollm2-135m-instruct" in models and "66.3" in models
    assert "gemma3-270m" in models and "67.7" in models and "PIQA" in models
