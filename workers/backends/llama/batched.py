"""A real batched llama.cpp backend: every prompt of a batch decodes in one shared context.

Each request gets its own sequence id (its own KV stream), native sampler chain and stop
rules; the decoding itself is :class:`workers.backends.llama.decoder.SlotDecoder`'s. Prompts
are prefilled together in as few ``llama_decode`` calls as ``n_batch`` allows, then each step
decodes one token for every sequence still running. A finished sequence leaves at once.

Before a batch runs, the KV cache it needs (``n_ctx_per_seq`` cells per sequence, plus a row of
logits) is compared with free memory; when fewer sequences fit than the batch has, that many
slots decode at once and each freed slot takes the next request at the next step, with results
still returned in request order. A device worker can keep the same decoder busy across
batches (:mod:`workers.service.engine`).

Greedy output does not depend on batch composition: with flash attention and one KV stream per
sequence (the defaults), and the decoder keeping every graph on one attention kernel (see
:mod:`workers.backends.llama.decoder`), a prompt decoded in any batch gives the same tokens as
decoded alone, on the CPU backend.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import llama_cpp

from pipeline.errors import ConfigError, InferenceError, InputError
from workers.backends.base import BatchOutput, GenerationRequest
from workers.backends.llama.chat import model_formatter
from workers.backends.llama.decoder import Prepared, SlotDecoder
from workers.backends.llama.kvmemory import (
    PeakRssSampler,
    available_host_memory_bytes,
    fitting_sequences,
    kv_geometry,
)
from workers.backends.llama.native import (
    ContextConfig,
    TokenBatch,
    Vocab,
    create_context,
    default_thread_count,
    load_model,
    silence_llama_logs,
)
from workers.backends.llama.sampling import SequenceSampler
from workers.backends.llama.sequence import Sequence


class BatchedLlamaBackend:
    """An :class:`~workers.backends.base.InferenceBackend` decoding whole batches in one context.

    The model is loaded once per instance. The context is created at the first batch, sized
    for ``max_batch_size`` sequences of ``n_ctx_per_seq`` tokens (fewer when free memory is
    short), and reused, emptied, for every later batch. One instance serves one thread.

    ``BatchOutput.peak_memory_bytes`` is this process's resident-memory high-water mark during
    the call: host memory only, so with layers offloaded to a GPU it leaves out device memory.

    Attributes:
        model_path: the GGUF file this backend serves.
        n_ctx_per_seq: context tokens (prompt plus completion) one request may use.
        max_batch_size: most sequences decoded together.
        n_threads: CPU threads llama.cpp computes with.
        sequence_memory_bytes: memory one sequence slot takes (KV cache and logits); a batch
            of N needs N times this.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        main_gpu: int | None = None,
        n_threads: int | None = None,
        n_ctx_per_seq: int = 1024,
        max_batch_size: int = 8,
        free_memory_bytes: Callable[[], int] | None = None,
        n_batch: int = 2048,
        n_ubatch: int = 512,
        kv_unified: bool = False,
        flash_attn: bool = True,
    ):
        """Load the model and read its tokenizer, chat template and KV geometry.

        Args:
            model_path: path of a GGUF model file.
            n_gpu_layers: layers to offload to a GPU (0 on CPU, -1 for all).
            main_gpu: CUDA number of the one GPU the whole model goes on (split mode none);
                None keeps llama.cpp's default split (see :func:`workers.backends.llama.native.model_params`).
            n_threads: CPU threads; None uses every core this process may run on.
            n_ctx_per_seq: KV cells per sequence; prompt tokens + max_tokens must fit.
            max_batch_size: most sequences decoded together in the shared context.
            free_memory_bytes: returns the memory free for KV cache now (device memory for a
                GPU); defaults to the host's available memory. What this backend's own
                context already holds is added to it, since a batch reuses that.
            n_batch: most tokens per ``llama_decode`` call (prompt prefill is cut at this).
            n_ubatch: most tokens per compute graph inside one call.
            kv_unified: share one KV buffer among sequences instead of one stream each. Off by
                default: with one stream per sequence a sequence's cells sit where they would
                if it ran alone, which is what makes batched output equal solo output.
            flash_attn: use llama.cpp's flash-attention kernels. On by default: they skip
                masked KV cells, so a sequence's attention does not depend on how long its
                batch-mates are; without them greedy output can drift with batch composition.

        Raises:
            ConfigError: a size argument is out of range.
            InferenceError: llama.cpp could not load the model.
        """
        _check_sizes(n_ctx_per_seq, max_batch_size, n_batch, n_ubatch)
        self.model_path = str(model_path)
        self.n_ctx_per_seq = n_ctx_per_seq
        self.max_batch_size = max_batch_size
        self.n_threads = n_threads or default_thread_count()
        self._free_memory_bytes = free_memory_bytes or available_host_memory_bytes
        self._ctx_shape = (n_batch, n_ubatch, kv_unified, flash_attn)
        silence_llama_logs()
        self._model: Any = load_model(self.model_path, n_gpu_layers, main_gpu)
        self._vocab = Vocab(self._model)
        self._formatter = model_formatter(self._model, self._vocab)
        self.sequence_memory_bytes = kv_geometry(self._model).seq_bytes(n_ctx_per_seq)
        self._ctx: Any = None
        self._ctx_seqs = 0
        self._batch = TokenBatch(n_batch)
        self._rss = PeakRssSampler()

    # -- public protocol ------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to with the model's tokenizer."""
        return len(self._vocab.tokenize(text))

    def format_prompt(self, request: GenerationRequest) -> str:
        """The exact text fed to the model for ``request`` (chat template applied)."""
        return self._formatter.render(request)

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        """Decode ``requests`` together; one result per request, in order.

        At most as many run at once as free memory allows (see :meth:`open_decoder`); when
        there are more, each one that finishes hands its slot to the next at the next step.
        TTFT and latency of every result count from the start of this call, so a request
        that waited for a slot includes its wait.

        Raises:
            InputError: a request is malformed or its prompt plus ``max_tokens`` does not fit
                ``n_ctx_per_seq``; nothing is decoded then.
            MemoryBudgetError: not even one sequence's KV cache fits free memory.
            InferenceError: llama.cpp failed to decode.
        """
        t0 = time.perf_counter()
        self._rss.reset()
        prepared = [self.prepare(r) for r in requests]
        decoder = self.open_decoder(len(prepared)) if prepared else None
        seqs = decode_all(decoder, prepared, t0) if decoder is not None else []
        self._rss.sample()
        return BatchOutput(
            results=[seq.result() for seq in seqs],
            wall_s=time.perf_counter() - t0,
            peak_memory_bytes=self._rss.peak_bytes,
            extra={
                "slots": float(decoder.n_slots if decoder else 0),
                "llama_decode_calls": float(decoder.decode_calls if decoder else 0),
                "prompt_tokens_reused": float(decoder.reused_prompt_tokens if decoder else 0),
                "grammar_steps": float(decoder.grammar_steps if decoder else 0),
                "grammar_resamples": float(decoder.grammar_resamples if decoder else 0),
                "kv_cache_bytes": float(self.sequence_memory_bytes * (decoder.n_slots if decoder else 0)),
            },
        )

    @property
    def peak_rss_bytes(self) -> int:
        """This process's resident-memory high-water mark (sampled at every decode step)."""
        return self._rss.peak_bytes

    def open_decoder(self, n_requests: int) -> SlotDecoder:
        """A :class:`SlotDecoder` on this backend's emptied context, with as many slots as
        ``n_requests`` (at most ``max_batch_size``) that fit free memory now, and the
        context's last stream for its prefix cache when no slot uses it.

        Raises:
            MemoryBudgetError: not even one sequence's KV cache fits free memory.
            InferenceError: the free-memory probe failed.
        """
        n_slots = self._reserve(n_requests)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), False)
        streams = not self._ctx_shape[2]  # one KV stream per sequence (not unified)
        spare = self._ctx_seqs - 1 if streams and self._ctx_seqs > n_slots else None
        return SlotDecoder(self._ctx, self._batch, self._vocab, n_slots, compacting=streams,
                           on_step=self._rss.sample, prefix_stream=spare)

    def close(self) -> None:
        """Free the context, the batch and the model; the backend is unusable afterwards."""
        self._drop_context()
        self._batch.free()
        self._rss.close()
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> BatchedLlamaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be torn down; nothing is left to free.
        with contextlib.suppress(Exception):
            self.close()

    # -- preparation and memory -----------------------------------------------------------

    def check(self, request: GenerationRequest) -> str | None:
        """Why ``request`` cannot run here (the message :meth:`generate` would raise), or None.

        Workers call this first so that one bad prompt is refused alone instead of failing
        the whole batch it was routed with.
        """
        try:
            self.prepare(request)
        except InputError as e:
            return str(e)
        return None

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Template and tokenize one request, refusing it clearly if it cannot run."""
        if request.max_tokens < 1:
            raise InputError(
                f"request {request.request_id!r}: max_tokens must be at least 1", field="max_tokens"
            )
        tokens = self._vocab.tokenize(self._formatter.render(request))
        if not tokens:
            raise InputError(f"request {request.request_id!r}: prompt is empty", field="prompt")
        if len(tokens) + request.max_tokens > self.n_ctx_per_seq:
            raise InputError(
                f"request {request.request_id!r}: prompt of {len(tokens)} tokens plus "
                f"max_tokens {request.max_tokens} exceeds the {self.n_ctx_per_seq}-token "
                "context per sequence; shorten the prompt or lower max_tokens",
                field="prompt",
            )
        if request.json_schema is not None:  # refuse a grammar llama.cpp rejects here, alone
            SequenceSampler(request, self._vocab.native).free()
        return request, tokens

    def _reserve(self, n_requests: int) -> int:
        """Sequences per sub-batch that fit memory; makes sure the context holds that many,
        and one stream more for the prefix cache when memory has room for it.

        Memory this backend's own context already holds counts as free, since a sub-batch
        reuses it.

        Raises:
            MemoryBudgetError: not even one sequence fits.
            InferenceError: the free-memory probe failed.
        """
        held = self._ctx_seqs * self.sequence_memory_bytes
        try:
            budget = int(self._free_memory_bytes()) + held
        except Exception as e:  # NVML, psutil or a caller's probe
            raise InferenceError(f"could not read free memory: {e}") from e
        most = min(self.max_batch_size + 1, int(llama_cpp.llama_max_parallel_sequences()))
        fit = fitting_sequences(self.sequence_memory_bytes, budget, most)
        wanted = min(n_requests, self.max_batch_size, fit)
        streams = wanted + 1 if wanted < fit else wanted  # the prefix cache's, if it fits
        if self._ctx_seqs < streams:
            self._drop_context()
            self._open_context(fit)
        return wanted

    def _open_context(self, n_seqs: int) -> None:
        n_batch, n_ubatch, kv_unified, flash_attn = self._ctx_shape
        cfg = ContextConfig(
            n_seqs=n_seqs,
            n_ctx_per_seq=self.n_ctx_per_seq,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_threads=self.n_threads,
            kv_unified=kv_unified,
            flash_attn=flash_attn,
        )
        self._ctx = create_context(self._model, cfg)
        self._ctx_seqs = n_seqs

    def _drop_context(self) -> None:
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
            self._ctx_seqs = 0


def decode_all(decoder: SlotDecoder, prepared: list[Prepared], origin_s: float) -> list[Sequence]:
    """Decode every request to its end, each taking a slot as soon as one is free.

    Returns the sequences in request order. The context is left empty, even on failure.
    """
    pending = deque(prepared)
    seqs: list[Sequence] = []
    try:
        while pending or decoder.running:
            n_new = min(decoder.free_slots, len(pending))
            if n_new:
                seqs.extend(decoder.admit([pending.popleft() for _ in range(n_new)], origin_s))
            if decoder.running:
                decoder.step()
    finally:
        decoder.clear()
    return seqs


def _check_sizes(n_ctx_per_seq: int, max_batch_size: int, n_batch: int, n_ubatch: int) -> None:
    """Refuse sizes llama.cpp would reject or mishandle.

    Raises:
        ConfigError: a size is out of range.
    """
    max_seqs = int(llama_cpp.llama_max_parallel_sequences())
    if not 1 <= max_batch_size <= max_seqs:
        raise ConfigError(f"max_batch_size must be in [1, {max_seqs}], got {max_batch_size}")
    if n_ctx_per_seq < 2:
        raise ConfigError(f"n_ctx_per_seq must be at least 2, got {n_ctx_per_seq}")
    if n_batch < max_batch_size or n_ubatch < 1:
        raise ConfigError(
            f"n_batch ({n_batch}) must be at least max_batch_size ({max_batch_size}) "
            f"and n_ubatch ({n_ubatch}) at least 1"
        )
