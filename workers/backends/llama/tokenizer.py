"""A model's tokenizer and chat template without its weights, for submit-time limits.

It is the worker's own tokenizer (:class:`~workers.backends.llama.native.Vocab`) and renderer
(:func:`~workers.backends.llama.chat.model_formatter`), so a prompt counts at submit time
exactly as many tokens as the worker feeds the model. Only the vocabulary is loaded
(``vocab_only``: about 0.1 s for SmolLM2, no weights), on first use, so a submission whose
prompts are all provably short never loads it.

It satisfies :class:`pipeline.intake.limits.PromptTokenizer`; the entry layer
(``pipeline.app``) builds it and hands it to the limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp

from pipeline.errors import ConfigError
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.intake.parse import PromptIn
from workers.backends.base import GenerationRequest
from workers.backends.llama.chat import PromptFormatter, model_formatter
from workers.backends.llama.native import Vocab, silence_llama_logs


def load_vocab_only(model_path: Path | str) -> Any:
    """The native ``llama_model`` of ``model_path`` with its vocabulary and metadata only.

    Raises:
        ConfigError: llama.cpp cannot read the file (missing, corrupt or not a model).
    """
    llama_cpp.llama_backend_init()
    silence_llama_logs()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode("utf-8"), params)
    if not model:
        raise ConfigError(f"model file {model_path} is corrupt or unreadable by llama.cpp")
    return model


class ModelTokenizer:
    """Counts a submitted record's tokens as a llama.cpp worker of ``model`` will."""

    def __init__(self, model: Path | str | None) -> None:
        """Remember ``model`` (None: the bundled one); nothing is read, not even whether the
        file exists, until a count is asked for."""
        self.model = model
        self._model: Any = None
        self._parts: tuple[Vocab, PromptFormatter] | None = None
        self._others: dict[Path, ModelTokenizer] = {}

    def for_model(self, model: Path) -> ModelTokenizer:
        """The tokenizer of the model file ``model``: this one when it is this tokenizer's
        file, else one kept here (loaded on first use, closed with this one).

        Raises:
            ConfigError: this tokenizer's own model file cannot be found.
        """
        if model == resolve_model_path(self.model):
            return self
        if model not in self._others:
            self._others[model] = ModelTokenizer(model)
        return self._others[model]

    def count_tokens(self, record: PromptIn) -> int:
        """Tokens of ``record`` as the model is fed it: chat template, BOS and special tokens.

        Raises:
            ConfigError: the model file is missing or unreadable.
            InputError: the worker would refuse the record (chat messages for a model with
                no chat template, or a template that rejects them).
        """
        vocab, formatter = self._load()
        return len(vocab.tokenize(formatter.render(to_request(record))))

    def max_token_bytes(self) -> int:
        """The most input bytes one token stands for (see :meth:`Vocab.max_token_bytes`).

        Raises:
            ConfigError: the model file is unreadable, or its vocabulary does not bound
                tokens by bytes.
        """
        return self._load()[0].max_token_bytes()

    def _load(self) -> tuple[Vocab, PromptFormatter]:
        if self._parts is None:
            self._model = load_vocab_only(resolve_model_path(self.model))
            vocab = Vocab(self._model)
            self._parts = vocab, model_formatter(self._model, vocab)
        return self._parts

    def close(self) -> None:
        """Free the vocabulary, if it was loaded, and those of :meth:`for_model`."""
        for other in self._others.values():
            other.close()
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model, self._parts = None, None

    def __enter__(self) -> ModelTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_request(record: PromptIn) -> GenerationRequest:
    """The request a worker builds for ``record`` once it is in the ledger (ids aside)."""
    messages = (None if record.messages is None
                else [{"role": m["role"], "content": m["content"]} for m in record.messages])
    return GenerationRequest(request_id=record.id or "submitted", prompt=record.prompt,
                             messages=messages)


def verify_model(path: Path) -> Path:
    """Return ``path`` once llama.cpp has read its header, metadata and vocabulary.

    A truncated or corrupt GGUF fails here, in about 0.1 s, rather than in a worker's log.

    Raises:
        ConfigError: the file is corrupt or unreadable.
    """
    llama_cpp.llama_model_free(load_vocab_only(path))
    return path
