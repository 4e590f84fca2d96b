"""Several GPUs on one host: each registry GPU device is one GPU, metered and loaded there alone.

NVML is the real pynvml module with its functions replaced by autospec mocks that model a host
with two GPUs (no GPU here). The CUDA side cannot run on this machine: what is checked is the
environment a worker gets before CUDA initialises and the llama.cpp model parameters it loads
with; that llama.cpp then honours them needs a CUDA build and two GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import llama_cpp
import pynvml
import pytest

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, detect_local
from workers.backends.factory import main_gpu
from workers.backends.llama.gpu import (
    CUDA_ORDER,
    CUDA_VISIBLE,
    PCI_ORDER,
    cuda_ordinal,
    gpu_handle,
    pin_process,
)
from workers.backends.llama.native import load_model, model_params
from workers.meters import NvmlMeter, make_meter

UUID_A = "GPU-aaaa0000-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbb0000-1111-2222-3333-444444444444"


class TwoGpus:
    """A host with GPUs A (NVML index 0) and B (index 1), each with its own energy counter."""

    def __init__(self) -> None:
        self.handles = ["handle-A", "handle-B"]
        self.uuids = [UUID_A, UUID_B]
        self.energy_mj = {"handle-A": 1_000_000, "handle-B": 9_000_000}

    def by_index(self, index: int) -> str:
        if not 0 <= index < 2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.handles[index]

    def by_uuid(self, uuid: str) -> str:
        if uuid not in self.uuids:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self.handles[self.uuids.index(uuid)]

    def uuid(self, handle: str) -> str:
        return self.uuids[self.handles.index(handle)]

    def index(self, handle: str) -> int:
        return self.handles.index(handle)

    def energy(self, handle: str) -> int:
        return self.energy_mj[handle]


@pytest.fixture
def gpus() -> Iterator[TwoGpus]:
    """pynvml patched (autospec) to show :class:`TwoGpus`."""
    host = TwoGpus()
    effects: dict[str, Any] = {
        "nvmlInit": None, "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": host.by_index, "nvmlDeviceGetHandleByUUID": host.by_uuid,
        "nvmlDeviceGetUUID": host.uuid, "nvmlDeviceGetIndex": host.index,
        "nvmlDeviceGetArchitecture": lambda h: pynvml.NVML_DEVICE_ARCH_HOPPER,
        "nvmlDeviceGetTotalEnergyConsumption": host.energy,
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=80 * 1024**3,
                                                             free=70 * 1024**3),
        "nvmlDeviceGetPowerManagementLimit": lambda h: 700_000,
    }
    with mock.patch.multiple(pynvml, **dict.fromkeys(effects, mock.DEFAULT),
                             autospec=True) as mocks:
        for name, effect in effects.items():
            if effect is not None:
                mocks[name].side_effect = effect
        yield host


def gpu_b(**kw: Any) -> Device:
    return Device(name="b", kind="nvidia", zone="DE-LU", n_gpu_layers=-1, host_share=0.0, **kw)


@pytest.mark.parametrize("names_gpu", [{"uuid": UUID_B}, {"index": 1},
                                       {"uuid": UUID_B, "index": 1}])
def test_meter_of_gpu_b_reads_gpu_b_only(gpus: TwoGpus, names_gpu: dict[str, Any]) -> None:
    meter = make_meter(gpu_b(**names_gpu))
    assert isinstance(meter, NvmlMeter)
    meter.start()
    gpus.energy_mj["handle-A"] += 500_000  # GPU A is busy with another worker's batch
    gpus.energy_mj["handle-B"] += 7_250
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(7.25)
    counter = pynvml.nvmlDeviceGetTotalEnergyConsumption
    assert {c.args[0] for c in counter.call_args_list} == {"handle-B"}  # type: ignore[attr-defined]


def test_detection_registers_each_gpu_as_its_own_pinned_device(gpus: TwoGpus) -> None:
    devices = detect_local()
    assert [(d.name, d.index, d.uuid) for d in devices] == [("gpu0", 0, UUID_A),
                                                            ("gpu1", 1, UUID_B)]
    for device, uuid, handle in zip(devices, gpus.uuids, gpus.handles, strict=True):
        env: dict[str, str] = {}
        pin = pin_process(device, environ=env)
        assert pin is not None and (pin.uuid, pin.nvml_index) == (uuid, device.index)
        assert env == {CUDA_VISIBLE: uuid, CUDA_ORDER: PCI_ORDER}
        assert cuda_ordinal(uuid, pynvml, env) == 0  # the only GPU its worker sees
        meter = NvmlMeter(device.index, uuid=device.uuid, min_window_s=0.0)
        meter.start()
        gpus.energy_mj[handle] += 1_000
        assert meter.stop().energy_j == pytest.approx(1.0)


def test_model_params_for_gpu_b_pin_gpu_b_without_split(
        gpus: TwoGpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CUDA_VISIBLE, raising=False)
    monkeypatch.delenv(CUDA_ORDER, raising=False)
    ordinal = main_gpu(gpu_b(index=1))
    assert (os.environ[CUDA_VISIBLE], os.environ[CUDA_ORDER]) == (UUID_B, PCI_ORDER)
    assert ordinal == 0
    params = model_params(-1, ordinal, gpu_offload=True)
    assert params.split_mode == llama_cpp.LLAMA_SPLIT_MODE_NONE
    assert (params.main_gpu, params.n_gpu_layers) == (0, -1)
    # Pinning again (the pool's process after the worker's main process) changes nothing.
    assert main_gpu(gpu_b(uuid=UUID_B)) == 0 and os.environ[CUDA_VISIBLE] == UUID_B
    # A process that was not pinned: default params keep llama.cpp's layer split.
    assert model_params(-1, None).split_mode == llama_cpp.LLAMA_SPLIT_MODE_LAYER


@pytest.mark.parametrize(("visible", "order", "ordinal"), [
    (f"{UUID_A},{UUID_B}", None, 1),
    (f"{UUID_B},{UUID_A}", None, 0),
    ("GPU-bbbb", None, 0),  # CUDA accepts a unique UUID prefix
    ("0,1", PCI_ORDER, 1),
    ("1,0", PCI_ORDER, 0),
    (None, PCI_ORDER, 1),
])
def test_cuda_number_of_gpu_b_under_cuda_visible_devices(
        gpus: TwoGpus, visible: str | None, order: str | None, ordinal: int) -> None:
    env = {k: v for k, v in ((CUDA_VISIBLE, visible), (CUDA_ORDER, order)) if v is not None}
    assert cuda_ordinal(UUID_B, pynvml, env) == ordinal


@pytest.mark.parametrize(("visible", "order", "message"), [
    (UUID_A, None, "not visible"),
    ("0", PCI_ORDER, "not visible"),
    ("1,0", None, "fastest first"),
    (None, None, "pin the worker first"),
])
def test_cuda_number_refused_when_it_cannot_be_right(
        gpus: TwoGpus, visible: str | None, order: str | None, message: str) -> None:
    env = {k: v for k, v in ((CUDA_VISIBLE, visible), (CUDA_ORDER, order)) if v is not None}
    with pytest.raises(ConfigError, match=message):
        cuda_ordinal(UUID_B, pynvml, env)


def test_a_worker_is_not_pinned_to_a_gpu_its_environment_hides(gpus: TwoGpus) -> None:
    env = {CUDA_VISIBLE: UUID_A}
    with pytest.raises(ConfigError, match="not visible"):
        pin_process(gpu_b(uuid=UUID_B), environ=env)
    assert env == {CUDA_VISIBLE: UUID_A}


def test_registry_uuid_and_index_must_name_the_same_gpu(gpus: TwoGpus) -> None:
    with pytest.raises(ConfigError, match="is NVML GPU 1, but the registry says index 0"):
        gpu_handle(pynvml, gpu_b(uuid=UUID_B, index=0))
    assert gpu_handle(pynvml, gpu_b(uuid=UUID_B)) == "handle-B"
    with pytest.raises(ValueError, match="uuid"):
        gpu_b(uuid="not-a-uuid")


def test_cpu_build_loads_a_pinned_model_on_the_cpu(model_path: Path) -> None:
    # This llama.cpp build has no GPU offload: a pin must not make it refuse the model.
    assert not llama_cpp.llama_supports_gpu_offload()
    model = load_model(str(model_path), n_gpu_layers=-1, main_gpu=0)
    try:
        assert model
        assert llama_cpp.llama_model_n_params(model) > 100_000_000
    finally:
        llama_cpp.llama_model_free(model)
