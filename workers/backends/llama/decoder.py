"""Continuous batching in one llama.cpp context: sequences join and leave between steps.

A :class:`SlotDecoder` keeps up to ``n_slots`` sequences decoding, each under its own sequence
id (its own KV stream). :meth:`SlotDecoder.admit` prefills new prompts into free slots (a prefix
all the newcomers share decoded once and copied); :meth:`SlotDecoder.step` decodes one token for
every running sequence. A sequence that finishes leaves at once, its KV cells freed and the
others moved down so the running ones hold consecutive ids (one compute graph per step); the
freed slot takes the next prompt at the next :meth:`~SlotDecoder.admit`.

Greedy output does not depend on who joins or leaves: with flash attention and one KV stream
per sequence a sequence's logits are computed from its own cells only, and every call keeps
ggml's CPU attention on one kernel, so a prompt decodes to the same tokens as it would alone.
That kernel (``ggml_compute_forward_flash_attn_ext_f16_one_chunk``) computes each query row
over its stream's cells in order, skipping masked ones; ggml switches to two others whose sums
differ in the last bits, which flips a near-tie argmax now and then (1 prompt of 64 at batch
4, at its 200th token):

- a tiled kernel when one stream feeds :data:`FA_TILE_Q_TOKENS` tokens or more in one graph:
  a prompt is prefilled in calls of fewer tokens than that;
- a split-KV kernel when the graph holds one token of one stream and 512 KV cells or more (a
  sequence decoding alone, past 256 tokens): a *companion* token of another, empty, stream
  joins that step and is removed right after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import llama_cpp

from workers.backends.base import GenerationRequest
from workers.backends.llama.native import TokenBatch, Vocab
from workers.backends.llama.prefixcache import PrefixCache
from workers.backends.llama.sampling import SequenceSampler
from workers.backends.llama.sequence import Sequence
from workers.backends.llama.streams import compact

Prepared = tuple[GenerationRequest, list[int]]

FA_TILE_Q_TOKENS = 64
"""Query rows per stream at which ggml's CPU flash attention goes tiled (``GGML_FA_TILE_Q``)."""
PREFILL_TOKENS_PER_CALL = FA_TILE_Q_TOKENS - 1
"""Most prompt tokens one sequence feeds in one ``llama_decode`` (see the module docstring)."""
LONE_SAFE_CELLS = 256
"""KV cells a sequence stepping alone may hold without a companion token: llama.cpp pads a
stream's attention span to a multiple of 256 cells (``llama_kv_cache::get_n_kv``), and a
sequence's cells are its positions (its stream is emptied before it comes; copies keep cell
indices), so the split-KV kernel's 512 cells begin at the 257th. A step with a companion costs
about 1.9 lone steps (2 CPU threads), so it is added exactly where it is needed."""


class SlotDecoder:
    """Up to ``n_slots`` sequences decoding together in one context, admitted at any step.

    One decoder serves one thread. It owns the samplers of the sequences it runs and frees
    each when its sequence leaves; the context itself belongs to the caller.

    Attributes:
        n_slots: most sequences decoding at once (the context holds that many KV streams).
        running: the sequences decoding now, by sequence id.
        decode_calls: ``llama_decode`` calls made so far.
        grammar_steps: tokens chosen under a JSON grammar by sequences that have left.
        grammar_resamples: of those, how many the grammar refused first.
    """

    def __init__(self, ctx: Any, batch: TokenBatch, vocab: Vocab, n_slots: int, *,
                 compacting: bool = True, on_step: Callable[[], None] | None = None,
                 prefix_stream: int | None = None):
        """Args:
            ctx: a llama.cpp context with at least ``n_slots`` sequences.
            batch: the token batch to fill (its capacity bounds tokens per ``llama_decode``).
            vocab: the model's vocabulary (end-of-generation test, pieces, samplers).
            n_slots: most sequences at once.
            compacting: move sequences down into freed ids (one KV stream per sequence);
                off for a unified KV cache, where ids do not split the graph.
            on_step: called after every ``llama_decode`` (peak-memory sampling, say).
            prefix_stream: a stream no slot uses (an id from ``n_slots`` up) to keep the
                prompt prefix newcomers share in (:mod:`workers.backends.llama.prefixcache`);
                None: every prompt is prefilled whole.
        """
        self.n_slots = n_slots
        self.running: list[Sequence] = []
        self.decode_calls = 0
        self.grammar_steps = self.grammar_resamples = 0
        self._ctx, self._batch, self._vocab = ctx, batch, vocab
        self._compacting = compacting
        self._on_step = on_step or (lambda: None)
        self._prefix = (PrefixCache(llama_cpp.llama_get_memory(ctx), prefix_stream)
                        if prefix_stream is not None else None)

    @property
    def reused_prompt_tokens(self) -> int:
        """Prompt tokens copied from the prefix cache instead of decoded, so far."""
        return self._prefix.reused_tokens if self._prefix else 0

    @property
    def free_slots(self) -> int:
        """Sequences that could join now."""
        return self.n_slots - len(self.running)

    def admit(self, prepared: list[Prepared], origin_s: float) -> list[Sequence]:
        """Prefill ``prepared`` into free slots and sample each one's first token.

        Args:
            prepared: at most :attr:`free_slots` requests with their prompt tokens.
            origin_s: ``time.perf_counter()`` their timings count from.

        Returns:
            The new sequences, in order; those already finished (one token asked for, or an
            end-of-generation token first) have left the context.
        """
        if len(prepared) > self.free_slots:
            raise ValueError(f"{len(prepared)} sequences for {self.free_slots} free slots")
        taken = {seq.seq_id for seq in self.running}
        free_ids = [i for i in range(self.n_slots) if i not in taken]  # after compact: n, n+1...
        seqs = [Sequence(request=req, seq_id=seq_id, prompt_tokens=toks,
                         sampler=SequenceSampler(req, self._vocab.native), origin_s=origin_s)
                for seq_id, (req, toks) in zip(free_ids, prepared, strict=False)]
        self.running.extend(seqs)
        for seq in seqs:
            seq.work_tokens += len(seq.prompt_tokens)
        self._prefill(seqs)
        self._retire()
        return seqs

    def step(self) -> list[Sequence]:
        """Decode one token for every running sequence; returns those that finished."""
        batch = self._batch
        batch.clear()
        stepping = list(self.running)
        for seq in stepping:
            seq.batch_index = batch.add(seq.next_token, seq.n_past, seq.seq_id, True)
            seq.n_past += 1
            seq.work_tokens += 1
        companion = self._companion_id(stepping)
        if companion is not None:  # keeps a lone sequence off the split-KV kernel
            held = self._held_tokens(companion)
            batch.add(stepping[0].next_token, held, companion, False)
        self._decode_and_sample(stepping)
        if companion is not None:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), companion,
                                          held, -1)
        return self._retire()

    def drop(self, seqs: list[Sequence]) -> None:
        """Stop ``seqs`` now (their batch timed out or was cancelled) and free their slots."""
        for seq in seqs:  # _retire frees the KV cells and samplers of every finished one
            seq.finish_reason = seq.finish_reason or "cancelled"
        self._retire()

    def clear(self) -> None:
        """Drop every sequence and empty the context (after a failed ``llama_decode``)."""
        for seq in self.running:
            seq.finish_reason = seq.finish_reason or "cancelled"
            self._free(seq)
        self.running = []
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), False)
        if self._prefix:
            self._prefix.forget()

    # -- internals ---------------------------------------------------------------------------

    def _prefill(self, seqs: list[Sequence]) -> None:
        """Feed each new prompt in pieces of :func:`piece_tokens`, one sequence per call,
        after what the prefix cache gives it.

        One stream and at most :data:`PREFILL_TOKENS_PER_CALL` tokens per graph keeps it on
        the row kernel (see the module docstring); llama.cpp would cut a call holding several
        prompts of unequal lengths into graphs of equal tokens per stream and leave lone
        tails. Only each prompt's last token asks for logits; its sequence samples its first
        token right after the call that computed them.
        """
        for seq in seqs:
            tokens = seq.prompt_tokens
            reused = pos = self._prefix.reuse(seq) if self._prefix else 0
            while pos < len(tokens):
                n = min(piece_tokens(len(tokens) - pos), self._batch.capacity)
                self._batch.clear()
                for p in range(pos, pos + n):
                    seq.batch_index = self._batch.add(tokens[p], p, seq.seq_id,
                                                      p == len(tokens) - 1)
                pos += n
                if pos < len(tokens):
                    self._decode()
            seq.n_past = pos
            self._decode_and_sample([seq])
            if self._prefix:
                self._prefix.offer(seq, reused)

    def _companion_id(self, stepping: list[Sequence]) -> int | None:
        """A stream next to a sequence stepping alone past :data:`LONE_SAFE_CELLS`: an empty
        one, or the prefix cache's (whose tokens stay). None when not alone, not that far,
        when streams do not split the graph, or when the context has no other stream."""
        if len(stepping) != 1 or not self._compacting or stepping[0].n_past <= LONE_SAFE_CELLS:
            return None
        seq_id = stepping[0].seq_id
        n_streams = int(llama_cpp.llama_n_seq_max(self._ctx))
        if seq_id + 1 < n_streams:
            return seq_id + 1
        return seq_id - 1 if seq_id > 0 else None

    def _held_tokens(self, stream: int) -> int:
        """Tokens a stream no running sequence uses holds: the prefix cache's, else none."""
        return len(self._prefix.tokens) if self._prefix and self._prefix.stream == stream else 0

    def _decode(self) -> None:
        self._batch.decode(self._ctx)
        self.decode_calls += 1
        self._batch.clear()
        self._on_step()

    def _decode_and_sample(self, sampling: list[Sequence]) -> None:
        """Decode the batch, sample one token for each of ``sampling``, mark finished ones."""
        ctx = self._ctx
        self._decode()
        tokens = [seq.sampler.sample(ctx, seq.batch_index) for seq in sampling]
        now_s = time.perf_counter()
        for seq, token in zip(sampling, tokens, strict=True):
            seq.accept(token, self._vocab, now_s)

    def _retire(self) -> list[Sequence]:
        """Free the slots of finished sequences; keep the running ones' ids consecutive."""
        done = [seq for seq in self.running if seq.done]
        if not done:
            return []
        memory = llama_cpp.llama_get_memory(self._ctx)
        for seq in done:
            llama_cpp.llama_memory_seq_rm(memory, seq.seq_id, -1, -1)
            self._free(seq)
        self.running = [seq for seq in self.running if not seq.done]
        if self._compacting:
            compact(memory, self.running)
        return done

    def _free(self, seq: Sequence) -> None:
        self.grammar_steps += seq.sampler.grammar_steps
        self.grammar_resamples += seq.sampler.grammar_resamples
        seq.sampler.free()


def piece_tokens(remaining: int) -> int:
    """Prompt tokens a sequence feeds in its next call with ``remaining`` (> 0) left: at most
    :data:`PREFILL_TOKENS_PER_CALL`, never leaving a one-token tail (one token of one stream
    takes the split-KV kernel once the stream holds 512 cells)."""
    n = min(PREFILL_TOKENS_PER_CALL, remaining)
    return n - 1 if remaining - n == 1 and n > 1 else n
