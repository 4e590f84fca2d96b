"""Log-likelihood of answer options after a prompt, with llama.cpp and the workers' own
tokenizer and chat template (so a prompt reads as a worker would feed it).

The prompt is rendered as one user message with the generation prompt
(:class:`~workers.backends.llama.chat.PromptFormatter`); each option is scored as the sum of
the log-probabilities of its tokens after it. Prompt and prompt + option are tokenized whole
and the option's tokens are those after their common prefix, so a tokenizer that merges across
the boundary is scored on what it really produces. The options of one prompt share one decode
of the prompt (all but its last token), so each option decodes only its own tokens, in the
same batches whatever the order of the options: the scores are reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from pipeline.errors import InputError
from workers.backends.base import GenerationRequest
from workers.backends.llama.chat import PromptFormatter, model_formatter
from workers.backends.llama.native import (
    ContextConfig,
    TokenBatch,
    Vocab,
    create_context,
    default_thread_count,
    load_model,
    silence_llama_logs,
)
from workers.backends.llama.prefixcache import common_prefix_len
from workers.backends.llama.sampling import logits_row

CONTEXT_TOKENS = 512


class OptionScorer:
    """Scores continuations of a prompt under one GGUF model (CPU, no GPU layers)."""

    def __init__(self, model_path: Path, n_threads: int | None = None) -> None:
        """Load ``model_path`` and a context of :data:`CONTEXT_TOKENS` tokens.

        Raises:
            InferenceError: llama.cpp cannot load the model or make the context.
        """
        silence_llama_logs()
        self._model: Any = load_model(str(model_path), 0)
        self.vocab = Vocab(self._model)
        self.formatter: PromptFormatter = model_formatter(self._model, self.vocab)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab.native))
        threads = n_threads or default_thread_count()
        self._ctx: Any = create_context(self._model, ContextConfig(
            n_seqs=1, n_ctx_per_seq=CONTEXT_TOKENS, n_batch=CONTEXT_TOKENS,
            n_ubatch=CONTEXT_TOKENS, n_threads=threads))
        self._batch = TokenBatch(CONTEXT_TOKENS)

    def prompt_text(self, question: str) -> str:
        """``question`` as the model is fed it: one user message and the generation prompt."""
        return self.formatter.render(GenerationRequest(request_id="eval", prompt=question))

    def logliks(self, prompt: str, options: tuple[str, ...]) -> list[float]:
        """For each option, the sum of log-probabilities (natural log) of its tokens after
        ``prompt``.

        Raises:
            InputError: an option adds no token, or the text exceeds the context.
            InferenceError: llama.cpp failed to decode.
        """
        head = self.vocab.tokenize(prompt)
        fulls = [self.vocab.tokenize(prompt + option) for option in options]
        starts = [common_prefix_len(head, full) for full in fulls]
        for option, full, start in zip(options, fulls, starts, strict=True):
            if start in (0, len(full)):
                raise InputError(f"option {option!r} adds no token after the prompt",
                                 field="option")
            if len(full) > CONTEXT_TOKENS:
                raise InputError(f"prompt and option take {len(full)} tokens, over "
                                 f"{CONTEXT_TOKENS}", field="prompt")
        shared = min(starts) - 1  # tokens before the first whose logits any option needs
        memory = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_clear(memory, True)
        if shared > 0:
            self._decode(head, 0, shared, shared)
        scores = []
        for full, start in zip(fulls, starts, strict=True):
            llama_cpp.llama_memory_seq_rm(memory, 0, shared, -1)
            self._decode(full, shared, len(full) - 1, start - 1)
            scores.append(sum(self._logprob(pos - shared, full[pos + 1])
                              for pos in range(start - 1, len(full) - 1)))
        return scores

    def _decode(self, tokens: list[int], begin: int, end: int, logits_from: int) -> None:
        """Decode ``tokens[begin:end]`` at their positions, with logits from ``logits_from``."""
        self._batch.clear()
        for pos in range(begin, end):
            self._batch.add(tokens[pos], pos, 0, pos >= logits_from)
        self._batch.decode(self._ctx)

    def _logprob(self, index: int, token: int) -> float:
        """Log-probability of ``token`` under the logits at batch index ``index``."""
        logits = logits_row(self._ctx, index, self._n_vocab).astype(np.float64)
        top = float(logits.max())
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))

    def close(self) -> None:
        """Free the context, the batch and the model."""
        if self._ctx is not None:
            self._batch.free()
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx, self._model = None, None

    def __enter__(self) -> OptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
