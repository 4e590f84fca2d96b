"""Counter edge cases of the meters: NVML through pynvml patched with autospec (resets, short
windows, pre-Volta sampling), RAPL package + DRAM, Jetson rails from recorded jtop readings,
the CPU TDP table and the host share of a GPU batch."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pynvml
import pytest

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from workers.meters import (
    CpuEstimateMeter,
    HostShareMeter,
    JetsonMeter,
    NvmlMeter,
    RaplMeter,
    cpu_tdp_w,
    host_meter_for,
    integrate_power_j,
    make_meter,
    rapl_domains,
)
from workers.meters.base import EnergyReading
from workers.meters.cpu_tdp import CpuTdpTable, local_cpu_name, normalise_cpu_name
from workers.meters.jetson import board_and_gpu_w, gpu_rail_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NVML_FUNCS = ("nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetArchitecture",
              "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage")


class Counter:
    """The GPU's energy counter in mJ; ``values`` are returned in turn, the last one repeated."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def __call__(self, handle: object) -> int:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


@pytest.fixture
def nvml() -> Iterator[dict[str, Any]]:
    """The real pynvml module with its functions replaced by autospec mocks (no GPU here)."""
    with mock.patch.multiple(pynvml, **dict.fromkeys(NVML_FUNCS, mock.DEFAULT),
                             autospec=True) as mocks:
        mocks["nvmlDeviceGetHandleByIndex"].return_value = "handle-0"
        mocks["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_HOPPER
        yield mocks


def test_nvml_counter_through_patched_pynvml(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = Counter(1_000, 1_000, 251_000)
    meter = NvmlMeter(0, min_window_s=0.0)
    meter.start()
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(250.0)  # (251000 - 1000) mJ
    assert (reading.source, reading.measured, reading.notes) == ("nvml", True, ())
    nvml["nvmlDeviceGetTotalEnergyConsumption"].assert_called_with("handle-0")


def test_nvml_counter_reset_counts_the_energy_since_the_reset(nvml: dict[str, Any]) -> None:
    # probe, start at 900 J, a poll at 950 J, then the driver reloads: 30 J since the reset.
    counter = Counter(900_000, 900_000, 950_000, 30_000)
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = counter
    meter = NvmlMeter(0, poll_interval_s=0.01)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(50.0 + 30.0)
    assert "counter-reset" in reading.notes


def test_nvml_short_window_and_no_update_are_flagged(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = Counter(7_000)
    meter = NvmlMeter(0, min_window_s=10.0)
    meter.start()
    reading = meter.stop()
    assert reading.energy_j == 0.0
    assert reading.notes == ("short-window", "no-counter-update")


def test_pre_volta_gpu_integrates_sampled_power(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_PASCAL
    nvml["nvmlDeviceGetPowerUsage"].return_value = 120_000  # 120 W
    meter = NvmlMeter(0, sample_interval_s=0.01, min_window_s=0.0)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert meter.source == reading.source == "nvml-power-sampled"
    assert reading.energy_j == pytest.approx(120.0 * reading.duration_s, rel=0.1)
    nvml["nvmlDeviceGetTotalEnergyConsumption"].assert_not_called()


def test_unsupported_counter_falls_back_to_sampling(nvml: dict[str, Any]) -> None:
    nvml["nvmlDeviceGetArchitecture"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NOT_SUPPORTED)
    meter = NvmlMeter(0)
    meter.open()
    assert meter.source == "nvml-power-sampled"


# --- RAPL package + DRAM -----------------------------------------------------------------------


def write_domain(root: Path, name: str, label: str, energy_uj: int, max_uj: int) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")


def test_rapl_package_and_dram_with_a_wrap(tmp_path: Path) -> None:
    write_domain(tmp_path, "intel-rapl:0", "package-0", 262_143_000_000, 262_143_328_850)
    write_domain(tmp_path, "intel-rapl:0:0", "core", 5, 262_143_328_850)
    write_domain(tmp_path, "intel-rapl:0:1", "dram", 65_000_000, 65_532_610_987)
    write_domain(tmp_path, "intel-rapl:1", "psys", 9, 262_143_328_850)
    assert [d.name for d in rapl_domains(tmp_path)] == ["package-0", "dram"]
    meter = RaplMeter(tmp_path)
    meter.start()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("171150\n")  # wrapped: +0.5 J
    (tmp_path / "intel-rapl:0:1" / "energy_uj").write_text("65250000\n")  # +0.25 J
    reading = meter.stop()
    assert reading.parts_j == {"package": pytest.approx(0.5), "dram": pytest.approx(0.25)}
    assert reading.energy_j == pytest.approx(0.75)
    assert RaplMeter(tmp_path, dram=False).domains[0].kind == "package"


# --- Jetson from recorded jtop readings --------------------------------------------------------


@pytest.fixture(scope="module")
def jtop_readings() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "jtop_power_readings.json").read_text())
    return data


def test_gpu_rail_is_chosen_per_module(jtop_readings: dict[str, Any]) -> None:
    assert gpu_rail_name(jtop_readings["orin_nx"][0]["power"]) == "VDD_CPU_GPU_CV"
    assert gpu_rail_name(jtop_readings["agx_orin_one"]) == "VDD_GPU_SOC"
    assert gpu_rail_name(jtop_readings["nano_one"]) == "POM_5V_GPU"
    assert gpu_rail_name({"rail": {"VDD_SOC": {}}, "tot": {}}) is None
    assert board_and_gpu_w(jtop_readings["agx_orin_one"], "VDD_GPU_SOC") == (21.5, 9.1)


def test_recorded_orin_readings_integrate_to_hand_computed_joules(
        jtop_readings: dict[str, Any]) -> None:
    rows = jtop_readings["orin_nx"]
    watts = [(r["t_s"], board_and_gpu_w(r["power"], "VDD_CPU_GPU_CV")) for r in rows]
    board_j = integrate_power_j([(t, w[0]) for t, w in watts])
    gpu_j = integrate_power_j([(t, w[1]) for t, w in watts])
    # 0.5 s x (9.6 + 13.4 + 13.8 + 14.0 + 10.7) W and 0.5 s x (3.8 + 7.0 + 7.4 + 7.6 + 4.8) W
    assert board_j == pytest.approx(30.75) == jtop_readings["expected"]["orin_nx_board_j"]
    assert gpu_j == pytest.approx(15.3) == jtop_readings["expected"]["orin_nx_gpu_rail_j"]


class ReplayJtop:
    """A jtop client whose ``power`` replays recorded readings, holding the last one."""

    def __init__(self, readings: list[dict[str, Any]]) -> None:
        self._readings = list(readings)

    @property
    def power(self) -> dict[str, Any]:
        return self._readings.pop(0) if len(self._readings) > 1 else self._readings[0]

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_jetson_meter_keeps_board_and_gpu_rail(jtop_readings: dict[str, Any]) -> None:
    steady = jtop_readings["orin_nx"][2]["power"]  # 14.0 W board, 7.6 W on the GPU rail
    meter = JetsonMeter(lambda: ReplayJtop([steady]), sample_interval_s=0.01)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(14.0 * reading.duration_s, rel=0.1)
    assert reading.parts_j["gpu_rail"] == pytest.approx(7.6 * reading.duration_s, rel=0.1)
    assert reading.notes == ("gpu-rail:VDD_CPU_GPU_CV",)


# --- CPU TDP table and host share --------------------------------------------------------------


def test_cpu_tdp_table_lookups() -> None:
    table = CpuTdpTable()
    assert len(table) > 4000
    assert normalise_cpu_name("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz") == "Intel Xeon Gold 6148"
    hit = table.lookup("AMD EPYC 7763 64-Core Processor")
    assert hit is not None and (hit.name, hit.tdp_w, hit.exact) == ("AMD EPYC 7763", 280.0, True)
    assert table.lookup("Intel(R) Xeon(R) Processor") is None  # a VM hiding its model
    assert cpu_tdp_w(None, "AMD EPYC 7763 64-Core Processor", 20.0) == (280.0, "table:AMD EPYC 7763")
    assert cpu_tdp_w(35.0, "AMD EPYC 7763", 20.0) == (35.0, "registry")
    assert cpu_tdp_w(None, None, 20.0) == (20.0, "nominal")


def test_cpu_tdp_table_rejects_bad_rows() -> None:
    with pytest.raises(ConfigError, match="line 3"):
        CpuTdpTable("Name,TDP\nA 1,10\nB 2,ten\n")


def test_local_cpu_name(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    assert local_cpu_name(info) == "AMD EPYC 7763 64-Core Processor"
    assert local_cpu_name(tmp_path / "none") is None


class FixedMeter:
    """A meter returning one preset reading."""

    def __init__(self, reading: EnergyReading) -> None:
        self.reading, self.source, self.measured = reading, reading.source, reading.measured

    def start(self) -> None:
        pass

    def stop(self) -> EnergyReading:
        return self.reading


def test_host_share_is_kept_apart_and_scaled() -> None:
    gpu = FixedMeter(EnergyReading(300.0, 2.0, "nvml", True))
    host = FixedMeter(EnergyReading(80.0, 2.0, "rapl", True, {"package": 60.0, "dram": 20.0}))
    reading = HostShareMeter(gpu, host, 0.25).stop()
    assert (reading.energy_j, reading.source) == (300.0, "nvml")
    assert reading.host is not None
    assert (reading.host.energy_j, reading.host.source) == (20.0, "rapl")
    assert reading.host.parts_j == {"package": 15.0, "dram": 5.0}
    assert reading.host.notes == ("host-share:0.25",)
    assert reading.total_energy_j == 320.0


def test_host_meter_is_rapl_where_readable_else_an_estimate(tmp_path: Path) -> None:
    gpu = Device(name="g", kind="nvidia", zone="DE-LU", host_share=0.5, host_tdp_w=64.0)
    estimate, share = host_meter_for(gpu, tmp_path / "none")
    assert isinstance(estimate, CpuEstimateMeter) and share == 1.0
    assert (estimate.tdp_w, estimate.tdp_origin) == (64.0, "registry")
    write_domain(tmp_path, "intel-rapl:0", "package-0", 1, 1000)
    rapl, share = host_meter_for(gpu, tmp_path)
    assert isinstance(rapl, RaplMeter) and share == 0.5


def test_cpu_device_without_tdp_uses_the_table_or_its_default(tmp_path: Path) -> None:
    meter = make_meter(Device(name="c", kind="cpu", zone="DE-LU"), rapl_root=tmp_path)
    assert isinstance(meter, CpuEstimateMeter)
    name = local_cpu_name()
    match = CpuTdpTable().lookup(name) if name else None
    expected = (match.tdp_w, f"table:{match.name}") if match else (65.0, "nominal")
    assert (meter.tdp_w, meter.tdp_origin) == expected
