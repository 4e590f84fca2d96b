"""A real batched llama.cpp backend: every prompt of a batch decodes in one shared context.

Each request gets its own sequence id (its own KV stream), native sampler chain and stop
rules. Prompts are prefilled together in as few ``llama_decode`` calls as ``n_batch`` allows,
a prefix common to all of them (the chat template's system prompt) decoded once and copied;
then each step decodes one token for every sequence still running. A finished sequence leaves
the batch at once and its KV cells are freed; the others are moved down into the freed slots
so that each step stays one compute graph.

Before a batch runs, the KV cache it needs (``n_ctx_per_seq`` cells per sequence, plus a row of
logits) is compared with free memory; a batch that does not fit is split into sub-batches that
do, run one after the other, with results still returned in request order.

Greedy output does not depend on batch composition: with flash attention and one KV stream per
sequence (the defaults) a prompt decoded in any batch gives the same tokens as decoded alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import llama_cpp

from pipeline.errors import ConfigError, InferenceError, InputError
from workers.backends.base import BatchOutput, GenerationRequest, GenerationResult
from workers.backends.llama.chat import model_formatter
from workers.backends.llama.kvmemory import (
    PeakRssSampler,
    available_host_memory_bytes,
    fitting_sequences,
    kv_geometry,
    split_sizes,
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
from workers.backends.llama.streams import compact, copy_sequence, shareable_prefix_len

Prepared = tuple[GenerationRequest, list[int]]


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
        self._decode_calls = 0
        self._grammar = [0, 0]  # steps under a grammar, and those it refused first

    # -- public protocol ------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to with the model's tokenizer."""
        return len(self._vocab.tokenize(text))

    def format_prompt(self, request: GenerationRequest) -> str:
        """The exact text fed to the model for ``request`` (chat template applied)."""
        return self._formatter.render(request)

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        """Decode ``requests`` together; one result per request, in order.

        TTFT and latency of every result count from the start of this call, so requests of a
        later sub-batch (after a memory split) include the time spent waiting for it.

        Raises:
            InputError: a request is malformed or its prompt plus ``max_tokens`` does not fit
                ``n_ctx_per_seq``; nothing is decoded then.
            MemoryBudgetError: not even one sequence's KV cache fits free memory.
            InferenceError: llama.cpp failed to decode.
        """
        t0 = time.perf_counter()
        self._rss.reset()
        self._decode_calls = 0
        self._grammar = [0, 0]
        prepared = [self._prepare(r) for r in requests]
        sizes = split_sizes(len(prepared), self._reserve(len(prepared))) if prepared else []
        results: list[GenerationResult] = []
        start = 0
        for size in sizes:
            results.extend(self._run(prepared[start : start + size], t0))
            start += size
        self._rss.sample()
        return BatchOutput(
            results=results,
            wall_s=time.perf_counter() - t0,
            peak_memory_bytes=self._rss.peak_bytes,
            extra={
                "sub_batches": float(len(sizes)),
                "llama_decode_calls": float(self._decode_calls),
                "grammar_steps": float(self._grammar[0]),
                "grammar_resamples": float(self._grammar[1]),
                "kv_cache_bytes": float(self.sequence_memory_bytes * max(sizes, default=0)),
            },
        )

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
            self._prepare(request)
        except InputError as e:
            return str(e)
        return None

    def _prepare(self, request: GenerationRequest) -> Prepared:
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
        """Sequences per sub-batch that fit memory; makes sure the context holds that many.

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
        fit = fitting_sequences(self.sequence_memory_bytes, budget, self.max_batch_size)
        wanted = min(n_requests, fit)
        if self._ctx_seqs < wanted:
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

    # -- decoding -------------------------------------------------------------------------

    def _run(self, prepared: list[Prepared], t0: float) -> list[GenerationResult]:
        """Prefill and decode one sub-batch to the end; the context is left empty."""
        seqs: list[Sequence] = []
        try:
            for i, (req, toks) in enumerate(prepared):
                sampler = SequenceSampler(req, self._vocab.native)
                seqs.append(Sequence(request=req, seq_id=i, prompt_tokens=toks, sampler=sampler))
            self._prefill(seqs, t0)
            self._decode_until_done(seqs, t0)
        finally:
            for seq in seqs:
                self._grammar[0] += seq.sampler.grammar_steps
                self._grammar[1] += seq.sampler.grammar_resamples
                seq.sampler.free()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), False)
        return [seq.result() for seq in seqs]

    def _prefill(self, seqs: list[Sequence], t0: float) -> None:
        """Feed every prompt, packing as many tokens per ``llama_decode`` as ``n_batch`` allows.

        A prefix all prompts share (the chat template's system prompt, say) is decoded once
        and copied to every sequence. Only each prompt's last token asks for logits; its
        sequence samples its first token right after the call that computed them.
        """
        shared = self._share_prefix(seqs)
        batch = self._batch
        batch.clear()
        ready: list[Sequence] = []
        for seq in seqs:
            last = len(seq.prompt_tokens) - 1
            for pos in range(shared, last + 1):
                if batch.n_tokens == batch.capacity:
                    self._step(ready, t0)
                    ready = []
                token = seq.prompt_tokens[pos]
                seq.batch_index = batch.add(token, pos, seq.seq_id, pos == last)
            seq.n_past = last + 1
            ready.append(seq)
        self._step(ready, t0)

    def _share_prefix(self, seqs: list[Sequence]) -> int:
        """Decode the common prompt prefix in the first sequence, copy it to the others.

        Returns how many prompt tokens every sequence already has in its KV cache.
        """
        n_shared = shareable_prefix_len(seqs)
        if n_shared == 0:
            return 0
        batch, owner = self._batch, seqs[0]
        for start in range(0, n_shared, batch.capacity):
            batch.clear()
            for pos in range(start, min(n_shared, start + batch.capacity)):
                batch.add(owner.prompt_tokens[pos], pos, owner.seq_id, pos == n_shared - 1)
            batch.decode(self._ctx)
            self._decode_calls += 1
        memory = llama_cpp.llama_get_memory(self._ctx)
        for seq in seqs[1:]:
            copy_sequence(memory, owner.seq_id, seq.seq_id)
        return n_shared

    def _decode_until_done(self, seqs: list[Sequence], t0: float) -> None:
        """One token per running sequence per ``llama_decode`` until all have finished."""
        batch = self._batch
        running = [seq for seq in seqs if not seq.done]
        while running:
            batch.clear()
            for seq in running:
                seq.batch_index = batch.add(seq.next_token, seq.n_past, seq.seq_id, True)
                seq.n_past += 1
            self._step(running, t0)
            still = [seq for seq in running if not seq.done]
            if len(still) < len(running) and not self._ctx_shape[2]:
                compact(llama_cpp.llama_get_memory(self._ctx), still)
            running = still

    def _step(self, sampling: list[Sequence], t0: float) -> None:
        """Decode the batch, sample one token for each of ``sampling``, retire finished ones."""
        ctx = self._ctx
        self._batch.decode(ctx)
        self._decode_calls += 1
        self._batch.clear()
        tokens = [seq.sampler.sample(ctx, seq.batch_index) for seq in sampling]
        now_s = time.perf_counter() - t0
        memory = None
        for seq, token in zip(sampling, tokens, strict=True):
            if seq.accept(token, self._vocab, now_s):
                memory = memory or llama_cpp.llama_get_memory(ctx)
                llama_cpp.llama_memory_seq_rm(memory, seq.seq_id, -1, -1)
        self._rss.sample()


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
