"""Predicted memory of a batch on a device, from the GGUF header of the device's model.

The router never loads a model: it reads the header (architecture, layers, heads, vocabulary)
with the ``gguf`` package, which memory-maps the file and parses only its metadata. A batch needs
the weights (the file's size) plus, per sequence, what :class:`pipeline.kvgeometry.KvGeometry`
sizes: the same rule ``workers.kvmemory`` applies before decoding. When the router's host has
no copy of a model, the check is skipped (the worker still refuses or splits a batch that
would not fit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from pipeline.devices import Device
from pipeline.errors import ConfigError
from pipeline.kvgeometry import KvGeometry
from pipeline.modelfile import resolve_model_path
from pipeline.settings import Settings
from router.options import MemoryNeed
from router.predictor import BatchShape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFootprint:
    """What a model costs in memory: its weights and each sequence of context."""

    weights_bytes: int
    geometry: KvGeometry

    def batch_bytes(self, batch_size: int, n_ctx_per_seq: int) -> int:
        """Weights plus ``batch_size`` sequences of ``n_ctx_per_seq`` tokens and their logits."""
        return self.weights_bytes + batch_size * self.geometry.seq_bytes(n_ctx_per_seq)


def read_footprint(path: Path) -> ModelFootprint:
    """Read a GGUF file's header.

    Raises:
        OSError, ValueError, KeyError: unreadable or not a GGUF model with the usual keys.
    """
    reader = gguf.GGUFReader(str(path))

    def meta(key: str) -> int | None:
        field = reader.fields.get(key)
        return int(field.contents()) if field is not None else None

    arch = str(reader.fields["general.architecture"].contents())
    n_layer = meta(f"{arch}.block_count")
    n_embd = meta(f"{arch}.embedding_length")
    if n_layer is None or n_embd is None:
        raise KeyError(f"{path}: no {arch}.block_count or {arch}.embedding_length")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    geometry = KvGeometry.from_hparams(
        n_layer=n_layer, n_embd=n_embd, n_head=meta(f"{arch}.attention.head_count") or 1,
        n_head_kv=meta(f"{arch}.attention.head_count_kv"),
        key_length=meta(f"{arch}.attention.key_length"),
        value_length=meta(f"{arch}.attention.value_length"),
        n_vocab=len(tokens.data) if tokens is not None else 0,
    )
    return ModelFootprint(weights_bytes=path.stat().st_size, geometry=geometry)


def memory_need(settings: Settings) -> MemoryNeed:
    """A :data:`~router.options.MemoryNeed` that finds and reads each model's header once.

    Results are kept per model setting (a device's own model, else ``settings.model``), so a
    routing pass touches no file.
    """
    footprints: dict[Path | None, ModelFootprint | None] = {}

    def need(device: Device, shape: BatchShape) -> int | None:
        key = device.model or settings.model
        if key not in footprints:
            footprints[key] = _footprint_or_none(device, key)
        fp = footprints[key]
        return fp.batch_bytes(shape.batch_size, settings.n_ctx_per_seq) if fp else None

    return need


def _footprint_or_none(device: Device, model: Path | None) -> ModelFootprint | None:
    try:
        path = resolve_model_path(model)
    except ConfigError as e:  # no model here: the router cannot judge, the worker will
        log.info("no model file for %s on the router host (%s); memory check skipped",
                 device.name, e)
        return None
    try:
        return read_footprint(path)
    except (OSError, ValueError, KeyError) as e:
        log.warning("cannot read the GGUF header of %s (%s); memory check skipped", path, e)
        return None
