"""Synthetic GGUF model files for tests and benchmarks, written with ``gguf.GGUFWriter``."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_synthetic_gguf(path: Path, n_vocab: int, *,
                         endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> Path:
    """A model header as a converter writes it: a 4-layer llama geometry, ``n_vocab`` tokens
    with as many merges and token types, and a few tiny tensors of mixed types."""
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_block_count(4)
    writer.add_embedding_length(256)
    writer.add_head_count(8)
    writer.add_head_count_kv(2)
    writer.add_key_length(64)
    writer.add_value_length(32)
    writer.add_token_list([f"tok{i}" for i in range(n_vocab)])
    writer.add_token_merges([f"t{i} k{i}" for i in range(n_vocab)])
    writer.add_token_types([1] * n_vocab)
    writer.add_tensor("token_embd.weight", np.ones((8, 256), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(256, dtype=np.float16))
    quant = np.zeros((4, 2 * gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][1]),
                     dtype=np.uint8)
    writer.add_tensor("blk.0.attn_q.weight", quant, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
