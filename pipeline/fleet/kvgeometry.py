"""What a sequence of a batch costs in memory: the KV cache and a row of logits.

One sizing rule for both sides: a worker reads the geometry from its loaded model
(``workers.backends.llama.kvmemory.kv_geometry``) to split or refuse a batch, and the router reads it from the
GGUF header (``router.live.memory``) to avoid sending a batch where it cannot fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KV_BYTES_PER_ELEMENT = 2  # f16 K and V cache
LOGIT_BYTES = 4  # one float32 per vocabulary entry in the output buffer
CTX_SEQ_PAD = 256  # llama.cpp pads a non-unified context's per-sequence size to this


@dataclass(frozen=True)
class KvGeometry:
    """What one token of context costs in KV cache.

    Attributes:
        n_layer: transformer layers, each with its own K and V cache.
        n_embd_k_gqa: K elements per token per layer (head_dim_k x n_head_kv).
        n_embd_v_gqa: V elements per token per layer (head_dim_v x n_head_kv).
        bytes_per_element: bytes of one cache element (2 for the f16 cache used here).
        n_vocab: vocabulary size; each sequence also holds one row of logits.
    """

    n_layer: int
    n_embd_k_gqa: int
    n_embd_v_gqa: int
    bytes_per_element: int
    n_vocab: int

    @classmethod
    def from_hparams(cls, *, n_layer: int, n_embd: int, n_head: int, n_head_kv: int | None,
                     key_length: int | None, value_length: int | None,
                     n_vocab: int) -> KvGeometry:
        """Geometry from a model's hyperparameters; head sizes default to n_embd / n_head and
        the KV heads to the attention heads, as llama.cpp assumes when the keys are absent."""
        n_head = max(1, n_head)
        kv_heads = n_head_kv or n_head
        return cls(n_layer=n_layer,
                   n_embd_k_gqa=(key_length or n_embd // n_head) * kv_heads,
                   n_embd_v_gqa=(value_length or n_embd // n_head) * kv_heads,
                   bytes_per_element=KV_BYTES_PER_ELEMENT, n_vocab=n_vocab)

    @property
    def kv_bytes_per_token(self) -> int:
        """K plus V bytes of one token across all layers."""
        return self.n_layer * (self.n_embd_k_gqa + self.n_embd_v_gqa) * self.bytes_per_element

    def seq_bytes(self, n_ctx_per_seq: int) -> int:
        """Memory one sequence slot needs: its padded KV cells plus a row of logits."""
        cells = math.ceil(n_ctx_per_seq / CTX_SEQ_PAD) * CTX_SEQ_PAD
        return cells * self.kv_bytes_per_token + self.n_vocab * LOGIT_BYTES
