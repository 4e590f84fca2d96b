"""One registry GPU device is one GPU: find it in NVML, pin its worker to it, map its CUDA number.

Three numberings meet here and must not be confused:

- the NVML index (``nvidia-smi``'s, in PCI bus order), which is what a registry's ``index``
  means; NVML ignores ``CUDA_VISIBLE_DEVICES`` and always sees every GPU;
- the GPU's UUID (``GPU-8f6b...``), stable across reboots and driver reloads; a registry may
  name a GPU by ``uuid`` instead of (or as well as) ``index``;
- the CUDA device number llama.cpp's ``main_gpu`` takes, which counts only the GPUs listed in
  ``CUDA_VISIBLE_DEVICES`` (by index or UUID, in that order), and, without it, counts every GPU
  in ``CUDA_DEVICE_ORDER`` (by default fastest first, not PCI order).

A worker is pinned twice. Before anything in its process initialises CUDA,
:func:`pin_process` sets ``CUDA_VISIBLE_DEVICES`` to its GPU's UUID (and
``CUDA_DEVICE_ORDER=PCI_BUS_ID``), so llama.cpp's CUDA backend sees that one GPU: no layer,
KV cache or scratch buffer can land on another, whatever llama.cpp's default split does. The
model is then loaded with split mode none and ``main_gpu`` = :func:`cuda_ordinal` (0 once
pinned), so even a process that sees several GPUs puts the whole model on this one. The energy
meter and the free-memory probe look the GPU up by UUID where the registry gives one
(:func:`gpu_handle`), so they read the GPU the model runs on.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError, MeterError
from pipeline.fleet.devices import Device

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
CUDA_ORDER = "CUDA_DEVICE_ORDER"
PCI_ORDER = "PCI_BUS_ID"


def nvml_module() -> Any:
    """The ``pynvml`` module, initialised.

    Raises:
        MeterError: nvidia-ml-py is missing or NVML cannot start (no driver).
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as e:
        raise MeterError("NVML needs nvidia-ml-py (import pynvml)") from e
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise MeterError(f"NVML: {e}") from e
    return nvml


def describe(device: Device) -> str:
    """How the registry names the device's GPU, for messages."""
    return f"GPU {device.uuid}" if device.uuid else f"GPU {device.index}"


def gpu_handle(nvml: Any, device: Device) -> Any:
    """NVML handle of the device's GPU: by UUID when the registry gives one, else by index.

    Raises:
        ConfigError: the registry gives both and they name different GPUs.
        MeterError: NVML has no such GPU.
    """
    try:
        if device.uuid is None:
            return nvml.nvmlDeviceGetHandleByIndex(device.index)
        handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
        index = int(nvml.nvmlDeviceGetIndex(handle))
    except nvml.NVMLError as e:
        raise MeterError(f"device {device.name!r}: NVML {describe(device)}: {e}") from e
    if "index" in device.model_fields_set and index != device.index:
        raise ConfigError(f"device {device.name!r}: uuid {device.uuid} is NVML GPU {index}, "
                          f"but the registry says index {device.index}")
    return handle


@dataclass(frozen=True)
class GpuPin:
    """The GPU a device runs on, and how its worker process is pinned to it.

    Attributes:
        uuid: the GPU's UUID.
        nvml_index: its NVML index (PCI order; NVML ignores ``CUDA_VISIBLE_DEVICES``).
        env: environment the worker process must have before CUDA initialises.
    """

    uuid: str
    nvml_index: int
    env: dict[str, str]


def resolve_pin(device: Device, nvml: Any, environ: MutableMapping[str, str]) -> GpuPin:
    """The pin of ``device`` given the process environment ``environ`` (not changed).

    Raises:
        ConfigError: the environment already restricts the process to GPUs without this one.
        MeterError: NVML has no such GPU.
    """
    handle = gpu_handle(nvml, device)
    uuid = str(nvml.nvmlDeviceGetUUID(handle))
    index = int(nvml.nvmlDeviceGetIndex(handle))
    if environ.get(CUDA_VISIBLE, "").strip():
        cuda_ordinal(uuid, nvml, environ)  # refuse a GPU the environment hides
    return GpuPin(uuid, index, {CUDA_VISIBLE: uuid, CUDA_ORDER: PCI_ORDER})


def pin_process(device: Device, nvml: Any | None = None,
                environ: MutableMapping[str, str] | None = None) -> GpuPin | None:
    """Pin this process to ``device``'s GPU (an NVIDIA device), before CUDA initialises.

    Sets ``CUDA_VISIBLE_DEVICES`` to the GPU's UUID and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
    Idempotent for the same GPU. Returns None for a device that is not a GPU.

    Raises:
        ConfigError: the environment already restricts the process to other GPUs.
        MeterError: NVML or the GPU is unavailable.
    """
    if device.kind != "nvidia":
        return None
    environ = os.environ if environ is None else environ
    pin = resolve_pin(device, nvml if nvml is not None else nvml_module(), environ)
    environ.update(pin.env)
    return pin


def cuda_ordinal(uuid: str, nvml: Any, environ: MutableMapping[str, str]) -> int:
    """The CUDA device number of the GPU ``uuid`` in a process with ``environ``.

    ``CUDA_VISIBLE_DEVICES`` may list NVML-order indices (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``)
    or UUIDs, whole or as a unique prefix, as CUDA accepts them; without it every GPU is visible.

    Raises:
        ConfigError: the GPU is not visible, or the order of indices cannot be known.
    """
    listed = environ.get(CUDA_VISIBLE, "").strip()
    entries = [e.strip() for e in listed.split(",") if e.strip()] if listed else None
    pci_order = environ.get(CUDA_ORDER, "FASTEST_FIRST") == PCI_ORDER
    if entries is None:
        entries = [str(i) for i in range(int(nvml.nvmlDeviceGetCount()))]
        if len(entries) > 1 and not pci_order:
            raise ConfigError(f"cannot tell GPU {uuid}'s CUDA number: several GPUs and "
                              f"{CUDA_ORDER} is not {PCI_ORDER}; pin the worker first")
    for ordinal, entry in enumerate(entries):
        if _entry_uuid(entry, nvml, pci_order) == uuid:
            return ordinal
    raise ConfigError(f"GPU {uuid} is not visible to this process: {CUDA_VISIBLE}={listed}")


def _entry_uuid(entry: str, nvml: Any, pci_order: bool) -> str | None:
    if entry.isdigit():
        if not pci_order:
            raise ConfigError(f"{CUDA_VISIBLE} lists GPU index {entry} but {CUDA_ORDER} is not "
                              f"{PCI_ORDER}: CUDA numbers GPUs fastest first, NVML by PCI bus; "
                              "list UUIDs, or set CUDA_DEVICE_ORDER=PCI_BUS_ID")
        try:
            return str(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(int(entry))))
        except nvml.NVMLError:
            return None
    matches = [u for u in _all_uuids(nvml) if u.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def _all_uuids(nvml: Any) -> list[str]:
    count = int(nvml.nvmlDeviceGetCount())
    return [str(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
