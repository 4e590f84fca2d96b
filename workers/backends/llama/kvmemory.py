"""KV-cache sizing, how many sequence slots fit free memory, and cheap peak-RSS sampling."""

from __future__ import annotations

import os
from typing import Any

import llama_cpp
import psutil

from pipeline.errors import MemoryBudgetError
from pipeline.fleet.kvgeometry import KvGeometry
from workers.backends.llama.native import model_meta


def _meta_int(model: Any, key: str) -> int | None:
    value = model_meta(model, key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def kv_geometry(model: Any) -> KvGeometry:
    """Read the KV geometry of a loaded model from its hyperparameters and GGUF metadata."""
    arch = model_meta(model, "general.architecture") or "llama"
    vocab = llama_cpp.llama_model_get_vocab(model)
    return KvGeometry.from_hparams(
        n_layer=llama_cpp.llama_model_n_layer(model),
        n_embd=llama_cpp.llama_model_n_embd(model),
        n_head=llama_cpp.llama_model_n_head(model),
        n_head_kv=llama_cpp.llama_model_n_head_kv(model),
        key_length=_meta_int(model, f"{arch}.attention.key_length"),
        value_length=_meta_int(model, f"{arch}.attention.value_length"),
        n_vocab=llama_cpp.llama_vocab_n_tokens(vocab),
    )


def fitting_sequences(seq_bytes: int, budget_bytes: int, max_batch_size: int) -> int:
    """How many sequence slots fit ``budget_bytes``, at most ``max_batch_size``.

    Raises:
        MemoryBudgetError: not even one sequence fits.
    """
    fit = budget_bytes // seq_bytes if seq_bytes > 0 else max_batch_size
    if fit < 1:
        raise MemoryBudgetError(
            f"one sequence needs {seq_bytes} bytes of KV cache and logits but only "
            f"{budget_bytes} bytes are free; lower n_ctx_per_seq or free memory"
        )
    return int(min(fit, max_batch_size))


def available_host_memory_bytes() -> int:
    """Host memory the OS could hand out now (``psutil.virtual_memory().available``)."""
    return int(psutil.virtual_memory().available)


class PeakRssSampler:
    """High-water mark of this process's resident memory, sampled when asked.

    Reads ``/proc/self/statm`` through one open descriptor (a few microseconds per sample);
    elsewhere falls back to psutil. It sees host memory only: with layers offloaded to a GPU
    the KV cache and weights in device memory are not part of the figure.
    """

    def __init__(self) -> None:
        self._page_bytes = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._process = psutil.Process() if self._fd is None else None
        self.peak_bytes = 0

    def rss_bytes(self) -> int:
        """Resident set size now."""
        if self._fd is not None:
            fields = os.pread(self._fd, 128, 0).split()
            return int(fields[1]) * self._page_bytes
        assert self._process is not None
        return int(self._process.memory_info().rss)

    def reset(self) -> None:
        """Start a new high-water mark from the current RSS."""
        self.peak_bytes = self.rss_bytes()

    def sample(self) -> None:
        """Fold the current RSS into the high-water mark."""
        rss = self.rss_bytes()
        if rss > self.peak_bytes:
            self.peak_bytes = rss

    def close(self) -> None:
        """Close the ``/proc`` descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._process = psutil.Process()
