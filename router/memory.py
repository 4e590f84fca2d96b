"""Predicted memory of a batch on a device, from the GGUF header of the device's model.

The router never loads a model: it reads the header (architecture, layers, heads, vocabulary)
with the ``gguf`` package, which memory-maps the file and parses only its metadata. A batch needs
the weights (the file's size), plus for each sequence its KV cache of ``n_ctx_per_seq`` tokens
in f16 and a row of f32 logits, the same sizing ``workers.kvmemory`` applies before decoding.
When the router's host has no copy of a model, the check is skipped (the worker still refuses
or splits a batch that would not fit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from pipeline.devices import Device
from pipeline.errors import ConfigError
from pipeline.modelfile import resolve_model_path
from pipeline.settings import Settings
from router.options import MemoryNeed
from router.predictor import BatchShape

log = logging.getLogger(__name__)

KV_BYTES_PER_ELEMENT = 2  # f16 cache
LOGIT_BYTES = 4  # one f32 per vocabulary entry per sequence


@dataclass(frozen=True)
class ModelFootprint:
    """What a model costs in memory: its weights and each token of context."""

    weights_bytes: int
    kv_bytes_per_token: int
    n_vocab: int

    def batch_bytes(self, batch_size: int, n_ctx_per_seq: int) -> int:
        """Weights plus ``batch_size`` sequences of ``n_ctx_per_seq`` tokens and their logits."""
        per_seq = n_ctx_per_seq * self.kv_bytes_per_token + self.n_vocab * LOGIT_BYTES
        return self.weights_bytes + batch_size * per_seq


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
    n_head = meta(f"{arch}.attention.head_count") or 1
    if n_layer is None or n_embd is None:
        raise KeyError(f"{path}: no {arch}.block_count or {arch}.embedding_length")
    n_head_kv = meta(f"{arch}.attention.head_count_kv") or n_head
    head_k = meta(f"{arch}.attention.key_length") or n_embd // n_head
    head_v = meta(f"{arch}.attention.value_length") or n_embd // n_head
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return ModelFootprint(
        weights_bytes=path.stat().st_size,
        kv_bytes_per_token=n_layer * (head_k + head_v) * n_head_kv * KV_BYTES_PER_ELEMENT,
        n_vocab=len(tokens.data) if tokens is not None else 0,
    )


def memory_need(settings: Settings) -> MemoryNeed:
    """A :data:`~router.options.MemoryNeed` reading each model's header once."""
    footprints: dict[Path, ModelFootprint | None] = {}

    def need(device: Device, shape: BatchShape) -> int | None:
        try:
            path = resolve_model_path(device.model or settings.model)
        except ConfigError as e:  # no model here: the router cannot judge, the worker will
            log.info("no model file for %s on the router host (%s); memory check skipped",
                     device.name, e)
            return None
        if path not in footprints:
            footprints[path] = _footprint_or_none(path)
        fp = footprints[path]
        return fp.batch_bytes(shape.batch_size, settings.n_ctx_per_seq) if fp else None

    return need


def _footprint_or_none(path: Path) -> ModelFootprint | None:
    try:
        return read_footprint(path)
    except (OSError, ValueError, KeyError) as e:
        log.warning("cannot read the GGUF header of %s (%s); memory check skipped", path, e)
        return None
