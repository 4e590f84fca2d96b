"""Energy meters: fakes at the vendor boundary (NVML module, sysfs tree, jtop), a real CPU run."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.errors import MeterError
from pipeline.fleet.devices import Device
from workers.meters import (
    CpuEstimateMeter,
    HostShareMeter,
    JetsonMeter,
    NvmlMeter,
    PowerSampler,
    RaplMeter,
    make_meter,
    metered,
    rapl_package_domains,
    wrapped_delta_uj,
)
from workers.meters.base import EnergyMeter, EnergyReading

# --- NVML --------------------------------------------------------------------------------------


class FakeNvml:
    """The slice of pynvml the meter uses, with pynvml's error shape (``NVMLError.value``)."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_FUNCTION_NOT_FOUND = 13

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, *, counter: bool = True, power_mw: int = 100_000,
                 init_error: int | None = None, counter_error: int | None = None) -> None:
        self.counter, self.power_mw = counter, power_mw
        self.init_error, self.counter_error = init_error, counter_error
        self.energy_mj = 5_000_000
        self.power_error: int | None = None

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.counter:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        if self.counter_error is not None:
            raise self.NVMLError(self.counter_error)
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        if self.power_error is not None:
            raise self.NVMLError(self.power_error)
        return self.power_mw


def test_nvml_counter_difference_in_joules() -> None:
    nvml = FakeNvml()
    meter: EnergyMeter = NvmlMeter(0, nvml=nvml)
    meter.start()
    nvml.energy_mj += 12_345  # 12.345 J used by the GPU
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(12.345)
    assert (reading.source, reading.measured) == ("nvml", True)
    assert reading.duration_s >= 0


def test_nvml_falls_back_to_power_sampling() -> None:
    nvml = FakeNvml(counter=False, power_mw=150_000)
    meter = NvmlMeter(1, nvml=nvml, sample_interval_s=0.01)
    meter.open()
    assert meter.source == "nvml-power-sampled" and meter.measured
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert reading.source == "nvml-power-sampled" and reading.measured
    assert reading.energy_j == pytest.approx(150.0 * reading.duration_s, rel=0.1)


@pytest.mark.parametrize("kwargs", [{"init_error": 9}, {"counter_error": 999}])
def test_nvml_errors_are_meter_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MeterError, match="NVML"):
        NvmlMeter(0, nvml=FakeNvml(**kwargs)).open()


def test_nvml_sampling_error_is_reported_on_stop() -> None:
    nvml = FakeNvml(counter=False)
    meter = NvmlMeter(0, nvml=nvml, sample_interval_s=0.01)
    meter.start()
    nvml.power_error = 15
    time.sleep(0.05)
    with pytest.raises(MeterError, match="power reading failed"):
        meter.stop()


def test_real_nvml_measures_or_raises_meter_error() -> None:
    """On a GPU machine this takes a real reading; elsewhere NVML must fail as a MeterError."""
    meter = NvmlMeter(0)
    try:
        meter.open()
    except MeterError:
        with pytest.raises(MeterError):
            make_meter(Device(name="g", kind="nvidia", zone="DE-LU"))
        return
    meter.start()
    time.sleep(0.3)
    reading = meter.stop()
    assert reading.measured and reading.source.startswith("nvml") and reading.energy_j > 0


# --- RAPL --------------------------------------------------------------------------------------


def write_domain(root: Path, name: str, label: str, energy_uj: int,
                 max_uj: int = 1_000_000) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def rapl_root(tmp_path: Path) -> Path:
    """A powercap tree: two packages, a core sub-domain and psys (both to be ignored)."""
    write_domain(tmp_path, "intel-rapl:0", "package-0", 100_000)
    write_domain(tmp_path, "intel-rapl:0:0", "core", 50_000)
    write_domain(tmp_path, "intel-rapl:1", "psys", 7_000)
    write_domain(tmp_path, "intel-rapl:2", "package-1", 990_000)
    return tmp_path


def set_uj(root: Path, name: str, value: int) -> None:
    (root / name / "energy_uj").write_text(f"{value}\n")


def test_rapl_finds_package_domains_only(rapl_root: Path) -> None:
    assert [d.name for d in rapl_package_domains(rapl_root)] == ["package-0", "package-1"]
    assert RaplMeter.available(rapl_root)


def test_rapl_sums_packages_across_a_wrap(rapl_root: Path) -> None:
    meter = RaplMeter(rapl_root)
    meter.start()
    set_uj(rapl_root, "intel-rapl:0", 400_000)  # +0.3 J
    set_uj(rapl_root, "intel-rapl:0:0", 900_000)  # sub-domain: ignored
    set_uj(rapl_root, "intel-rapl:2", 40_000)  # wrapped at 1e6: +0.05 J
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(0.35)
    assert (reading.source, reading.measured) == ("rapl", True)


def test_rapl_poll_catches_repeated_wraps(rapl_root: Path) -> None:
    meter = RaplMeter(rapl_root, poll_interval_s=0.01)
    meter.start()
    for value in (600_000, 100_000, 600_000, 150_000):  # two wraps on package-0
        set_uj(rapl_root, "intel-rapl:0", value)
        time.sleep(0.1)
    reading = meter.stop()
    # 100k -> 600k -> (wrap) 100k -> 600k -> (wrap) 150k: 0.5 + 0.5 + 0.5 + 0.55 J
    assert reading.energy_j == pytest.approx(2.05)


def test_wrapped_delta() -> None:
    assert wrapped_delta_uj(10, 25, 100) == 15
    assert wrapped_delta_uj(90, 5, 100) == 15


def test_rapl_unavailable_without_readable_counters(tmp_path: Path) -> None:
    assert not RaplMeter.available(tmp_path / "missing")
    with pytest.raises(MeterError, match="no RAPL package domains"):
        RaplMeter(tmp_path)
    d = write_domain(tmp_path, "intel-rapl:0", "package-0", 1)
    (d / "energy_uj").unlink()
    (d / "energy_uj").mkdir()  # unreadable as a file, like a root-only counter
    assert not RaplMeter.available(tmp_path)


def test_rapl_stop_before_start(rapl_root: Path) -> None:
    with pytest.raises(MeterError):
        RaplMeter(rapl_root).stop()


# --- Jetson ------------------------------------------------------------------------------------


class FakeJtop:
    """A jtop client: ``power["tot"]["power"]`` in milliwatts."""

    def __init__(self, power_mw: float = 8000.0) -> None:
        self.power: dict[str, Any] = {"rail": {}, "tot": {"power": power_mw}}
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


def test_jetson_integrates_total_rail_power() -> None:
    client = FakeJtop(power_mw=8000.0)
    meter = JetsonMeter(lambda: client, sample_interval_s=0.01)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert client.started
    assert (reading.source, reading.measured) == ("jetson-stats", True)
    assert reading.energy_j == pytest.approx(8.0 * reading.duration_s, rel=0.1)
    meter.close()
    assert client.closed


def test_jetson_without_power_data_is_a_meter_error() -> None:
    client = FakeJtop()
    client.power = {}
    with pytest.raises(MeterError, match="no total power"):
        JetsonMeter(lambda: client).start()


def test_jetson_connection_failure_is_a_meter_error() -> None:
    def refuse() -> Any:
        raise ConnectionRefusedError("jtop service not running")

    with pytest.raises(MeterError, match="jtop service"):
        JetsonMeter(refuse).open()


@pytest.mark.skipif(importlib.util.find_spec("jtop") is not None, reason="jetson-stats installed")
def test_jetson_without_jetson_stats() -> None:
    with pytest.raises(MeterError, match="jetson-stats"):
        make_meter(Device(name="j", kind="jetson", zone="DE-LU"))


# --- CPU estimate ------------------------------------------------------------------------------


def burn_cpu(seconds: float) -> int:
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        n += 1
    return n


def test_cpu_estimate_is_tdp_times_utilisation() -> None:
    meter = CpuEstimateMeter(tdp_w=40.0, n_cores=2)
    meter.start()
    burn_cpu(0.3)
    reading = meter.stop()
    assert (reading.source, reading.measured) == ("estimate:tdp*cpu-util", False)
    assert reading.energy_j > 0
    # One busy core of two: about 20 W for about 0.3 s, never more than the whole TDP.
    assert 0.25 * 20.0 <= reading.energy_j <= 40.0 * reading.duration_s + 1e-9


def test_cpu_estimate_idle_is_near_zero() -> None:
    meter = CpuEstimateMeter(tdp_w=40.0, n_cores=2)
    meter.start()
    time.sleep(0.2)
    assert meter.stop().energy_j < 1.0


def test_cpu_estimate_rejects_bad_tdp() -> None:
    with pytest.raises(MeterError):
        CpuEstimateMeter(tdp_w=0)


# --- make_meter and metered -------------------------------------------------------------------


def test_make_meter_for_cpu(tmp_path: Path, rapl_root: Path) -> None:
    cpu = Device(name="c", kind="cpu", zone="DE-LU", tdp_w=65.0)
    estimate = make_meter(cpu, rapl_root=tmp_path / "none")
    assert isinstance(estimate, CpuEstimateMeter) and estimate.tdp_w == 65.0
    assert not estimate.measured
    assert isinstance(make_meter(cpu, rapl_root=rapl_root), RaplMeter)


def test_make_meter_picks_nvml_for_nvidia(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    modules = {"pynvml": fake}
    monkeypatch.setattr("workers.meters.nvml.importlib",
                        SimpleNamespace(import_module=modules.__getitem__))
    meter = make_meter(Device(name="g", kind="nvidia", zone="DE-LU", index=3, host_share=0))
    assert isinstance(meter, NvmlMeter) and meter.index == 3 and meter.source == "nvml"
    shared = make_meter(Device(name="g", kind="nvidia", zone="DE-LU", index=3))  # host share by default
    assert isinstance(shared, HostShareMeter) and shared.source == "nvml"
    assert isinstance(shared.device_meter, NvmlMeter)
    assert isinstance(shared.host_meter, CpuEstimateMeter)  # no RAPL on this machine


class ListMeter:
    """A meter returning preset readings; ``fail_stop`` makes stop raise."""

    source, measured = "fake", False

    def __init__(self, fail_stop: bool = False) -> None:
        self.fail_stop = fail_stop
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> EnergyReading:
        self.calls.append("stop")
        if self.fail_stop:
            raise MeterError("counter vanished")
        return EnergyReading(3.0, 1.5, self.source, self.measured)


def test_metered_sets_the_reading_on_exit() -> None:
    meter = ListMeter()
    with metered(meter) as held:
        assert held.reading is None
    assert held.reading == EnergyReading(3.0, 1.5, "fake", False)
    assert meter.calls == ["start", "stop"]


def test_metered_stops_on_error_and_keeps_the_block_error() -> None:
    meter = ListMeter(fail_stop=True)
    with pytest.raises(ZeroDivisionError), metered(meter):
        _ = 1 / 0
    assert meter.calls == ["start", "stop"]
    with pytest.raises(MeterError), metered(ListMeter(fail_stop=True)):
        pass


def test_power_sampler_must_start_first() -> None:
    with pytest.raises(MeterError):
        PowerSampler(lambda: 1.0, 0.01).stop()


@pytest.fixture(autouse=True)
def no_stray_threads() -> Iterator[None]:
    import threading

    before = {t.name for t in threading.enumerate()}
    yield
    leftover = {t.name for t in threading.enumerate()} - before
    assert not leftover & {"power-sampler", "rapl-poll"}
