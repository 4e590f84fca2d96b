"""Thin, typed wrappers over the llama.cpp C API as exposed by llama-cpp-python's ``llama_cpp``.

Everything here owns one native object (model, context, batch, vocabulary) or reads one
property of it; the batched decode loop in :mod:`workers.backends.llama.batched` composes them. Native calls
that can fail are checked here and turned into :class:`pipeline.errors.InferenceError`.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

import llama_cpp

from pipeline.errors import ConfigError, InferenceError

KV_TYPE = llama_cpp.GGML_TYPE_F16
# Vocabularies whose tokenizer keeps every input byte in some token's piece (byte-level BPE,
# SentencePiece with byte fallback, RWKV's and PLaMo-2's greedy byte matching). WordPiece and
# Unigram normalise text first and can drop whitespace, so no byte count bounds their tokens.
BYTE_COVERING_VOCABS = {llama_cpp.LLAMA_VOCAB_TYPE_SPM: "SPM", llama_cpp.LLAMA_VOCAB_TYPE_BPE: "BPE",
                        llama_cpp.LLAMA_VOCAB_TYPE_RWKV: "RWKV",
                        llama_cpp.LLAMA_VOCAB_TYPE_PLAMO2: "PLaMo-2"}
MIN_TOKEN_BYTES = 4  # an unknown-token stands for one character: at most 4 UTF-8 bytes
# pipeline.fleet.kvgeometry sizes the cache as f16 (KV_BYTES_PER_ELEMENT): keep it in step with KV_TYPE.


@llama_cpp.llama_log_callback
def _drop_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """A llama.cpp log sink that discards everything (kept alive by this module)."""


def silence_llama_logs() -> None:
    """Route llama.cpp and ggml logging to a sink that drops it."""
    llama_cpp.llama_log_set(_drop_log, ctypes.c_void_p(0))


def default_thread_count() -> int:
    """Cores this process may run on (the affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def model_params(n_gpu_layers: int, main_gpu: int | None = None,
                 gpu_offload: bool | None = None) -> Any:
    """llama.cpp model parameters: ``n_gpu_layers`` offloaded, all on GPU ``main_gpu``.

    Args:
        n_gpu_layers: layers to offload (0 none, -1 all).
        main_gpu: the CUDA device number of the one GPU to use; None leaves llama.cpp's
            default (layers split over every visible GPU), for a process without a GPU device.
        gpu_offload: whether this llama.cpp build can offload to a GPU (asked by default). A
            CPU-only build has no GPU to pin, and would refuse any ``main_gpu`` as invalid.
    """
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    if gpu_offload is None:
        gpu_offload = main_gpu is not None and bool(llama_cpp.llama_supports_gpu_offload())
    if main_gpu is not None and gpu_offload:
        # A registry GPU device is one GPU, metered alone: no split over the others.
        params.split_mode = llama_cpp.LLAMA_SPLIT_MODE_NONE
        params.main_gpu = main_gpu
    return params


def load_model(model_path: str, n_gpu_layers: int, main_gpu: int | None = None) -> Any:
    """Load a GGUF model once; returns the native ``llama_model`` pointer.

    Args:
        model_path: the GGUF file.
        n_gpu_layers: layers to offload to the GPU.
        main_gpu: see :func:`model_params`.

    Raises:
        InferenceError: llama.cpp could not load the file.
    """
    llama_cpp.llama_backend_init()
    params = model_params(n_gpu_layers, main_gpu)
    model = llama_cpp.llama_model_load_from_file(model_path.encode("utf-8"), params)
    if not model:
        raise InferenceError(f"llama.cpp could not load model {model_path}")
    return model


def model_meta(model: Any, key: str) -> str | None:
    """One GGUF metadata value as a string, or None when the key is absent."""
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode("utf-8"), buf, size)
    if n < 0:
        return None
    if n >= size:  # truncated: ask again with the exact length
        buf = ctypes.create_string_buffer(n + 1)
        llama_cpp.llama_model_meta_val_str(model, key.encode("utf-8"), buf, n + 1)
    return buf.value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ContextConfig:
    """How a llama.cpp context for batched decoding is shaped.

    Attributes:
        n_seqs: sequences (KV streams) the context holds at once.
        n_ctx_per_seq: KV cells per sequence; llama.cpp pads it up to a multiple of 256.
        n_batch: most tokens one ``llama_decode`` call accepts.
        n_ubatch: most tokens one compute graph processes (llama.cpp splits a call into these).
        n_threads: CPU threads for decode and prefill.
        kv_unified: one KV buffer shared by all sequences instead of one stream per sequence.
        flash_attn: use the flash-attention kernels.
    """

    n_seqs: int
    n_ctx_per_seq: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    kv_unified: bool = False
    flash_attn: bool = False


def create_context(model: Any, cfg: ContextConfig) -> Any:
    """Create a context holding ``cfg.n_seqs`` sequences of ``cfg.n_ctx_per_seq`` cells each.

    Raises:
        InferenceError: llama.cpp could not allocate the context.
    """
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = cfg.n_seqs * cfg.n_ctx_per_seq
    params.n_seq_max = cfg.n_seqs
    params.n_batch = cfg.n_batch
    params.n_ubatch = min(cfg.n_ubatch, cfg.n_batch)
    params.n_threads = cfg.n_threads
    params.n_threads_batch = cfg.n_threads
    params.kv_unified = cfg.kv_unified
    params.type_k = KV_TYPE
    params.type_v = KV_TYPE
    params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if cfg.flash_attn
        else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise InferenceError(
            f"llama.cpp could not create a context for {cfg.n_seqs} sequences "
            f"x {cfg.n_ctx_per_seq} tokens"
        )
    return ctx


class TokenBatch:
    """A reusable native ``llama_batch`` with room for ``capacity`` tokens, one sequence each."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.n_tokens = 0
        # Cached field pointers: each attribute read on a ctypes struct costs a lookup.
        self._token = self._batch.token
        self._pos = self._batch.pos
        self._n_seq_id = self._batch.n_seq_id
        self._seq_id = self._batch.seq_id
        self._logits = self._batch.logits

    def clear(self) -> None:
        """Forget the tokens added so far."""
        self.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token; returns its index (the ``idx`` to sample its logits at)."""
        i = self.n_tokens
        self._token[i] = token
        self._pos[i] = pos
        self._n_seq_id[i] = 1
        self._seq_id[i][0] = seq_id
        self._logits[i] = logits
        self.n_tokens = i + 1
        return i

    def decode(self, ctx: Any) -> None:
        """Run ``llama_decode`` on the tokens added so far.

        Raises:
            InferenceError: llama.cpp rejected the batch or failed to compute it.
        """
        self._batch.n_tokens = self.n_tokens
        rc = llama_cpp.llama_decode(ctx, self._batch)
        if rc != 0:
            why = "no KV slot for the batch" if rc == 1 else f"return code {rc}"
            raise InferenceError(f"llama_decode failed on {self.n_tokens} tokens: {why}")

    def free(self) -> None:
        """Release the native arrays; the batch is unusable afterwards."""
        if self.capacity:
            llama_cpp.llama_batch_free(self._batch)
            self.capacity = 0


class Vocab:
    """The model's tokenizer: text to tokens, and tokens to bytes, with per-token caches."""

    def __init__(self, model: Any):
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        if not self._vocab:
            raise InferenceError("llama.cpp model has no vocabulary")
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._buf = ctypes.create_string_buffer(256)
        self._token_bytes: int | None = None

    @property
    def native(self) -> Any:
        """The native ``llama_vocab`` pointer (for grammar and penalty samplers)."""
        return self._vocab

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``, with BOS where the model wants one and special tokens parsed.

        Special tokens are parsed because chat-templated prompts spell them as text.
        """
        data = text.encode("utf-8")
        n_max = len(data) + 8
        for _ in range(2):
            out = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), out, n_max, self.add_bos, True)
            if n >= 0:
                return list(out[:n])
            n_max = -n
        raise InferenceError(f"llama.cpp could not tokenize {len(data)} bytes")

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for; control and end tokens render as nothing."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = self._buf
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            cached = buf.raw[:n]
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT and the like)."""
        cached = self._eog.get(token)
        if cached is None:
            cached = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            self._eog[token] = cached
        return cached

    def max_token_bytes(self) -> int:
        """The most input bytes one token of this vocabulary can stand for.

        That is the longest token piece (the bytes a token decodes to, special tokens
        included, since prompts are tokenized with special tokens parsed), at least
        :data:`MIN_TOKEN_BYTES`. These tokenizers cover every byte of their input with the
        pieces of the tokens they emit, so a text of B bytes has at least B /
        max_token_bytes() tokens: a byte count refuses a prompt as surely as a token count.
        Read once (about 0.1 s for a 49k-token vocabulary).

        Raises:
            ConfigError: the vocabulary normalises its input (WordPiece, Unigram), so bytes do
                not bound its tokens.
        """
        if self._token_bytes is None:
            kind = llama_cpp.llama_vocab_type(self._vocab)
            if kind not in BYTE_COVERING_VOCABS:
                raise ConfigError(f"the model's vocabulary (llama.cpp type {kind}) may drop input "
                                  "bytes, so prompt sizes cannot be bounded; use a model with a "
                                  f"{', '.join(BYTE_COVERING_VOCABS.values())} vocabulary")
            self._token_bytes = max(MIN_TOKEN_BYTES, self._longest_piece())
        return self._token_bytes

    def _longest_piece(self) -> int:
        buf, size = self._buf, len(self._buf)
        piece = llama_cpp.llama_token_to_piece
        return max((abs(piece(self._vocab, t, buf, size, 0, True))
                    for t in range(llama_cpp.llama_vocab_n_tokens(self._vocab))), default=0)

    def special_text(self, which: str) -> str:
        """Text of the ``"bos"`` or ``"eos"`` token, or ``""`` when the model has none."""
        getter = llama_cpp.llama_vocab_bos if which == "bos" else llama_cpp.llama_vocab_eos
        token = getter(self._vocab)
        if token < 0:
            return ""
        return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")
