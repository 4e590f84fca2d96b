"""Build the per-process pieces of a device worker: backend and meter for one device."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import psutil

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.settings import Settings
from workers.backends.base import InferenceBackend
from workers.backends.llama.gpu import cuda_ordinal, gpu_handle, nvml_module, pin_process


def free_memory_probe(device: Device) -> Callable[[], int]:
    """Return a callable giving the free memory (bytes) the KV cache of ``device`` may use."""
    if device.kind == "nvidia":
        return _nvml_free(device)
    # CPU and Jetson (unified memory) draw on host RAM.
    return lambda: int(psutil.virtual_memory().available)


def _nvml_free(device: Device) -> Callable[[], int]:
    nvml = nvml_module()
    handle = gpu_handle(nvml, device)
    return lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).free)


def main_gpu(device: Device) -> int | None:
    """llama.cpp's ``main_gpu`` for ``device``: its GPU's CUDA number in this process, after
    pinning the process to it (:func:`workers.backends.llama.gpu.pin_process`); None for a device that is not
    a GPU."""
    pin = pin_process(device)
    if pin is None:
        return None
    return cuda_ordinal(pin.uuid, nvml_module(), os.environ)


def build_backend(device: Device, settings: Settings) -> InferenceBackend:
    """Build the backend ``settings.backend`` names for ``device``, loading its model once.

    ``llama`` loads the device's own model (it wins over ``settings.model``); ``echo`` needs no
    model; ``module:factory`` calls a plugin's ``factory(device, settings)``.

    A GPU device's model goes on its GPU alone: the process is pinned to it first, and the model
    loaded with split mode none (see :mod:`workers.backends.llama.gpu`).

    Raises:
        ConfigError: a plugin cannot be imported, or the process cannot see the device's GPU.
        MeterError: NVML cannot find the device's GPU.
        InferenceError: llama.cpp could not load the model.
    """
    if settings.backend == "echo":
        from workers.backends.echo import EchoBackend

        return EchoBackend(n_ctx_per_seq=settings.n_ctx_per_seq)
    if settings.backend != "llama":
        return _plugin(settings.backend)(device, settings)
    from workers.backends.llama.batched import BatchedLlamaBackend

    model_path = resolve_model_path(device.model or settings.model)
    return BatchedLlamaBackend(
        model_path=str(model_path),
        n_gpu_layers=device.n_gpu_layers,
        main_gpu=main_gpu(device),
        n_threads=settings.n_threads,
        n_ctx_per_seq=settings.n_ctx_per_seq,
        max_batch_size=device.max_batch_size,
        free_memory_bytes=free_memory_probe(device),
    )


def _plugin(spec: str) -> Callable[[Device, Settings], InferenceBackend]:
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable[[Device, Settings], InferenceBackend] = getattr(
            importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"backend {spec!r} cannot be loaded: {e}") from e
    return factory
