"""Predicted memory of a batch on a device, from the GGUF header of the model it would run.

The router never loads a model: it reads the header (:mod:`router.live.ggufheader`: layers, heads,
vocabulary size, tensor sizes) without parsing the vocabulary. A batch needs the weights (the
tensors' bytes) plus, per sequence, what :class:`pipeline.fleet.kvgeometry.KvGeometry` sizes: the
same rule ``workers.backends.llama.kvmemory`` applies before decoding. When the router's host has no copy of
a model, the check is skipped (the worker still refuses or splits a batch that would not fit).

A footprint is read once per file (its path, size and modification time) and kept: in the
process, and in Redis under :data:`FOOTPRINT_PREFIX` so a restarted router finds it too.
Redis rather than a cache file because the router already holds a Redis connection and keeps
its other state there, and because a router in a container restarts on a fresh file system
(where a cache file would be gone) while the broker's data persists; where Redis loses it, the
cost is one header read (tens of milliseconds). Entries expire after :data:`FOOTPRINT_TTL_S`,
so footprints of replaced files do not pile up under the ``noeviction`` policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from redis.exceptions import RedisError

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.fleet.kvgeometry import KvGeometry
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.fleet.servedmodels import ServedModel
from router.live.ggufheader import read_header
from router.predict.predictor import BatchShape
from router.scoring.options import ModelMemoryNeed

log = logging.getLogger(__name__)
FOOTPRINT_PREFIX = "ecobatch:footprint:"
FOOTPRINT_TTL_S = 30 * 86_400
RECHECK_S = 60.0
"""How often a kept footprint's file is looked at again (a replaced model is re-read)."""


@dataclass(frozen=True)
class ModelFootprint:
    """What a model costs in memory: its weights and each sequence of context."""

    weights_bytes: int
    geometry: KvGeometry

    def batch_bytes(self, batch_size: int, n_ctx_per_seq: int) -> int:
        """Weights plus ``batch_size`` sequences of ``n_ctx_per_seq`` tokens and their logits."""
        return self.weights_bytes + batch_size * self.geometry.seq_bytes(n_ctx_per_seq)


def read_footprint(path: Path) -> ModelFootprint:
    """Read a GGUF file's header (not its vocabulary).

    Raises:
        OSError, ValueError, KeyError: unreadable or not a GGUF model with the usual keys.
    """
    header = read_header(path)
    arch = str(header.values["general.architecture"])

    def meta(key: str) -> int | None:
        return header.int_value(f"{arch}.{key}")

    n_layer, n_embd = meta("block_count"), meta("embedding_length")
    if n_layer is None or n_embd is None:
        raise KeyError(f"{path}: no {arch}.block_count or {arch}.embedding_length")
    geometry = KvGeometry.from_hparams(
        n_layer=n_layer, n_embd=n_embd, n_head=meta("attention.head_count") or 1,
        n_head_kv=meta("attention.head_count_kv"), key_length=meta("attention.key_length"),
        value_length=meta("attention.value_length"),
        n_vocab=header.array_lengths.get("tokenizer.ggml.tokens", 0),
    )
    return ModelFootprint(weights_bytes=header.tensor_bytes, geometry=geometry)


def file_key(path: Path) -> str:
    """Redis key of a model file's footprint: its path, size and modification time."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return FOOTPRINT_PREFIX + hashlib.sha256(ident.encode()).hexdigest()


class FootprintCache:
    """Footprints by model setting, each file read once and kept (see the module docstring).

    Args:
        store: Redis to keep footprints in across restarts; None keeps them in this process.
    """

    def __init__(self, store: redis.Redis | None = None) -> None:
        self.store = store
        self._kept: dict[Hashable, tuple[float, ModelFootprint | None]] = {}
        self._by_file: dict[str, ModelFootprint] = {}

    def footprint(self, device: Device, model: Path | None) -> ModelFootprint | None:
        """The footprint of ``model`` (None: the default model), or None when unreadable here."""
        return self._kept_or_read(model, device, lambda: resolve_model_path(model))

    def served_footprint(self, device: Device, served: ServedModel,
                         default: Path | None) -> ModelFootprint | None:
        """The footprint of a served model (its file, its package's, else ``default``)."""
        key = (served.name, served.path, served.package, default)
        return self._kept_or_read(key, device, lambda: served.resolve(default))

    def _kept_or_read(self, key: Hashable, device: Device,
                      locate: Callable[[], Path]) -> ModelFootprint | None:
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < RECHECK_S:
            return kept[1]
        fp = self._lookup(device, locate, first=kept is None)
        self._kept[key] = (time.monotonic(), fp)
        return fp

    def _lookup(self, device: Device, locate: Callable[[], Path],
                first: bool) -> ModelFootprint | None:
        try:
            path = locate()
            key = file_key(path)
        except (ConfigError, OSError) as e:  # no model here: the router cannot judge, the worker will
            if first:
                log.info("no model file for %s on the router host (%s); memory check skipped",
                         device.name, e)
            return None
        fp = self._by_file.get(key) or self._stored(key)
        if fp is None:
            try:
                fp = read_footprint(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("cannot read the GGUF header of %s (%s); memory check skipped",
                            path, e)
                return None
            self._store(key, fp)
        self._by_file[key] = fp
        return fp

    def _stored(self, key: str) -> ModelFootprint | None:
        if self.store is None:
            return None
        try:
            raw = self.store.get(key)
            if raw is None:
                return None
            data = json.loads(raw)
            return ModelFootprint(int(data["weights_bytes"]), KvGeometry(**data["geometry"]))
        except (RedisError, ValueError, KeyError, TypeError) as e:  # read the file instead
            log.debug("no usable stored footprint %s: %s", key, e)
            return None

    def _store(self, key: str, fp: ModelFootprint) -> None:
        if self.store is None:
            return
        try:
            self.store.set(key, json.dumps(asdict(fp)), ex=FOOTPRINT_TTL_S)
        except RedisError as e:  # kept in this process all the same
            log.debug("cannot keep footprint %s in Redis: %s", key, e)


def memory_need(model: Path | None, n_ctx_per_seq: int,
                store: redis.Redis | None = None) -> ModelMemoryNeed:
    """A :data:`~router.scoring.options.ModelMemoryNeed` over a :class:`FootprintCache` kept
    in ``store``: the bytes a batch needs with one served model of a device, read from that
    model's GGUF header.

    A single-model device's model is its own file, else ``model`` (``ECOBATCH_MODEL``); a
    routing pass touches no file (a kept footprint's file is looked at again every
    :data:`RECHECK_S`).
    """
    cache = FootprintCache(store)

    def need(device: Device, served: ServedModel, shape: BatchShape) -> int | None:
        fp = cache.served_footprint(device, served, device.model or model)
        return fp.batch_bytes(shape.batch_size, n_ctx_per_seq) if fp else None

    return need
