"""Build the per-process pieces of a device worker: backend and meter for one device."""

from __future__ import annotations

from collections.abc import Callable

import psutil

from pipeline.devices import Device
from pipeline.modelfile import resolve_model_path
from pipeline.settings import Settings
from workers.backend import InferenceBackend


def free_memory_probe(device: Device) -> Callable[[], int]:
    """Return a callable giving the free memory (bytes) the KV cache of ``device`` may use."""
    if device.kind == "nvidia":
        return _nvml_free(device.index)
    # CPU and Jetson (unified memory) draw on host RAM.
    return lambda: int(psutil.virtual_memory().available)


def _nvml_free(index: int) -> Callable[[], int]:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)


def build_backend(device: Device, settings: Settings) -> InferenceBackend:
    """Load the model for ``device`` once: the device's own model wins over ``settings.model``."""
    from workers.batched import BatchedLlamaBackend

    model_path = resolve_model_path(device.model or settings.model)
    return BatchedLlamaBackend(
        model_path=str(model_path),
        n_gpu_layers=device.n_gpu_layers,
        n_threads=settings.n_threads,
        n_ctx_per_seq=settings.n_ctx_per_seq,
        max_batch_size=device.max_batch_size,
        free_memory_bytes=free_memory_probe(device),
    )
