"""The prompt prefix most newcomers share, kept in a KV stream of its own and copied, not decoded.

Prompts of one job usually start alike: a chat template's system part is 24 of SmolLM2's
40-odd tokens per question. llama-server keeps each slot's last prompt and decodes only what
a new prompt adds to it; a :class:`PrefixCache` does the same with one spare stream of the
context: the first prompt prefilled is copied there whole, and every later newcomer gets the
part it shares with the cache (trimmed to that when shorter) copied into its own stream before
its prefill starts where the copy ends. A prompt that shares too little replaces the cache.

The copied cells are bit-identical to the ones its own prefill would compute (each row of
the attention and matrix kernels depends on its own inputs only, see
:mod:`workers.backends.llama.decoder`), so the cache changes the speed, never the tokens.
"""

from __future__ import annotations

from typing import Any

import llama_cpp

from workers.backends.llama.sequence import Sequence
from workers.backends.llama.streams import copy_sequence

MIN_SHARED_PREFIX_TOKENS = 8
"""Below this many shared prompt tokens, copying a whole stream is not worth it."""
OWN_TAIL_TOKENS = 2
"""Prompt tokens a newcomer always prefills itself: its last one's logits come from its own
stream, and one token of one stream in a graph would take another attention kernel."""


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """One KV stream holding a prompt prefix, offered to every newcomer.

    Attributes:
        stream: the sequence id (and stream) the cache holds its cells under; never one a
            running sequence uses.
        tokens: the prompt tokens the stream holds, from position 0.
        reused_tokens: prompt tokens copied instead of decoded so far.
    """

    def __init__(self, memory: Any, stream: int) -> None:
        self.stream = stream
        self.tokens: list[int] = []
        self.reused_tokens = 0
        self._memory = memory

    def reuse(self, seq: Sequence) -> int:
        """Copy the part of the cache ``seq``'s prompt starts with into its stream.

        Returns how many of its prompt tokens its stream now holds (0: none copied).
        """
        limit = len(seq.prompt_tokens) - OWN_TAIL_TOKENS
        n = min(common_prefix_len(self.tokens, seq.prompt_tokens), limit)
        if n < MIN_SHARED_PREFIX_TOKENS:
            return 0
        if n < len(self.tokens):  # keep only what newcomers share; positions n.. go
            llama_cpp.llama_memory_seq_rm(self._memory, self.stream, n, -1)
            self.tokens = self.tokens[:n]
        copy_sequence(self._memory, self.stream, seq.seq_id)
        self.reused_tokens += n
        return n

    def offer(self, seq: Sequence, reused: int) -> None:
        """``seq``'s whole prompt is in its stream: keep it as the cache when the cache gave
        it nothing (empty, or prompts of another shape)."""
        if reused:
            return
        copy_sequence(self._memory, seq.seq_id, self.stream)
        self.tokens = list(seq.prompt_tokens)

    def forget(self) -> None:
        """The context was emptied: the cache holds nothing."""
        self.tokens = []
