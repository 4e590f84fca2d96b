"""Continuous batching in one llama.cpp context: sequences join and leave between steps.

A :class:`SlotDecoder` keeps up to ``n_slots`` sequences decoding, each under its own sequence
id (its own KV stream). :meth:`SlotDecoder.admit` prefills new prompts into free slots (a prefix
all the newcomers share decoded once and copied); :meth:`SlotDecoder.step` decodes one token for
every running sequence. A sequence that finishes leaves at once, its KV cells freed and the
others moved down so the running ones hold consecutive ids (one compute graph per step); the
freed slot takes the next prompt at the next :meth:`~SlotDecoder.admit`.

Greedy output does not depend on who joins or leaves: with flash attention and one KV stream
per sequence a sequence's logits are computed from its own cells only, so a prompt decodes to
the same tokens as it would alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import llama_cpp

from workers.backends.base import GenerationRequest
from workers.backends.llama.native import TokenBatch, Vocab
from workers.backends.llama.sampling import SequenceSampler
from workers.backends.llama.sequence import Sequence
from workers.backends.llama.streams import compact, copy_sequence, shareable_prefix_len

Prepared = tuple[GenerationRequest, list[int]]


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
                 compacting: bool = True, on_step: Callable[[], None] | None = None):
        """Args:
            ctx: a llama.cpp context with at least ``n_slots`` sequences.
            batch: the token batch to fill (its capacity bounds tokens per ``llama_decode``).
            vocab: the model's vocabulary (end-of-generation test, pieces, samplers).
            n_slots: most sequences at once.
            compacting: move sequences down into freed ids (one KV stream per sequence);
                off for a unified KV cache, where ids do not split the graph.
            on_step: called after every ``llama_decode`` (peak-memory sampling, say).
        """
        self.n_slots = n_slots
        self.running: list[Sequence] = []
        self.decode_calls = 0
        self.grammar_steps = self.grammar_resamples = 0
        self._ctx, self._batch, self._vocab = ctx, batch, vocab
        self._compacting = compacting
        self._on_step = on_step or (lambda: None)

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
        self._decode_and_sample(stepping)
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

    # -- internals ---------------------------------------------------------------------------

    def _prefill(self, seqs: list[Sequence]) -> None:
        """Feed the new prompts, packing as many tokens per ``llama_decode`` as fit.

        Only each prompt's last token asks for logits; its sequence samples its first token
        right after the call that computed them.
        """
        shared = self._share_prefix(seqs)
        batch = self._batch
        batch.clear()
        ready: list[Sequence] = []
        for seq in seqs:
            last = len(seq.prompt_tokens) - 1
            for pos in range(shared, last + 1):
                if batch.n_tokens == batch.capacity:
                    self._decode_and_sample(ready)
                    ready = []
                seq.batch_index = batch.add(seq.prompt_tokens[pos], pos, seq.seq_id, pos == last)
            seq.n_past = last + 1
            ready.append(seq)
        self._decode_and_sample(ready)

    def _share_prefix(self, seqs: list[Sequence]) -> int:
        """Decode the newcomers' common prompt prefix once, copy it to the others.

        Returns how many prompt tokens every one of them already has in its KV cache.
        """
        n_shared = shareable_prefix_len(seqs)
        if n_shared == 0:
            return 0
        batch, owner = self._batch, seqs[0]
        for start in range(0, n_shared, batch.capacity):
            batch.clear()
            for pos in range(start, min(n_shared, start + batch.capacity)):
                batch.add(owner.prompt_tokens[pos], pos, owner.seq_id, pos == n_shared - 1)
            self._decode()
        memory = llama_cpp.llama_get_memory(self._ctx)
        for seq in seqs[1:]:
            copy_sequence(memory, owner.seq_id, seq.seq_id)
        return n_shared

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
