"""Count a prompt's tokens at submit time the way a worker will: chat template, then tokenizer.

Only the model's vocabulary is loaded (``vocab_only``: about 0.1 s for SmolLM2, no weights),
so a producer can refuse an oversize prompt before it is queued.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from pipeline.errors import ConfigError
from pipeline.intake.parse import PromptIn

_META_BUF = 1 << 16
_PIECE_BUF = 256  # a longer piece is measured by the negative length llama.cpp returns
# Vocabularies whose tokenizer keeps every input byte in some token's piece (byte-level BPE,
# SentencePiece with byte fallback, RWKV's and PLaMo-2's greedy byte matching). WordPiece and
# Unigram normalise text first and can drop whitespace, so no byte count bounds their tokens.
_BYTE_COVERING_VOCABS = {llama_cpp.LLAMA_VOCAB_TYPE_SPM: "SPM", llama_cpp.LLAMA_VOCAB_TYPE_BPE: "BPE",
                         llama_cpp.LLAMA_VOCAB_TYPE_RWKV: "RWKV",
                         llama_cpp.LLAMA_VOCAB_TYPE_PLAMO2: "PLaMo-2"}
MIN_TOKEN_BYTES = 4  # an unknown-token stands for one character: at most 4 UTF-8 bytes


@llama_cpp.llama_log_callback
def _drop_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """A llama.cpp log sink that discards everything: a producer's output stays clean."""


class ModelTokenizer:
    """The tokenizer and chat template of one GGUF model."""

    def __init__(self, model_path: Path) -> None:
        """Load the vocabulary of ``model_path``.

        Raises:
            ConfigError: llama.cpp cannot read the file (corrupt or not a model).
        """
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_drop_log, ctypes.c_void_p(0))
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model: Any = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise ConfigError(f"model file {model_path} is corrupt or unreadable by llama.cpp")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        template = self._meta("tokenizer.chat_template")
        self._template = (Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
                          if template else None)
        self._token_bytes: int | None = None

    def count(self, record: PromptIn) -> int:
        """Tokens of ``record`` as the model is fed it (template and special tokens included)."""
        return len(self._tokenize(self._render(record)))

    def max_token_bytes(self) -> int:
        """The most input bytes one token of this vocabulary can stand for.

        That is the longest token piece (the bytes a token decodes to, special tokens
        included), at least :data:`MIN_TOKEN_BYTES`. These tokenizers cover every byte of their
        input with the pieces of the tokens they emit, so a text of B bytes has at least
        B / max_token_bytes() tokens: a byte count refuses a prompt as surely as a token count.
        Read once per tokenizer (about 0.1 s for a 49k-token vocabulary).

        Raises:
            ConfigError: the vocabulary normalises its input (WordPiece, Unigram), so bytes do
                not bound its tokens.
        """
        if self._token_bytes is None:
            kind = llama_cpp.llama_vocab_type(self._vocab)
            if kind not in _BYTE_COVERING_VOCABS:
                raise ConfigError(f"the model's vocabulary (llama.cpp type {kind}) may drop input "
                                  "bytes, so prompt sizes cannot be bounded; use a model with a "
                                  f"{', '.join(_BYTE_COVERING_VOCABS.values())} vocabulary")
            self._token_bytes = max(MIN_TOKEN_BYTES, self._longest_piece())
        return self._token_bytes

    def _longest_piece(self) -> int:
        buf = ctypes.create_string_buffer(_PIECE_BUF)
        piece = llama_cpp.llama_token_to_piece
        return max((abs(piece(self._vocab, t, buf, _PIECE_BUF, 0, True))
                    for t in range(llama_cpp.llama_vocab_n_tokens(self._vocab))), default=0)

    def close(self) -> None:
        """Free the vocabulary."""
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def _render(self, record: PromptIn) -> str:
        messages: list[dict[str, str]] = (
            [{"role": m["role"], "content": m["content"]} for m in record.messages]
            if record.messages is not None else [{"role": "user", "content": record.prompt or ""}])
        if self._template is None:
            return "\n".join(m["content"] for m in messages)
        return str(self._template(messages=messages).prompt)  # type: ignore[arg-type]

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        out = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), out, n_max, self._add_bos, True)
        return list(out[:max(n, 0)])

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(_META_BUF)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, _META_BUF)
        return None if n < 0 else buf.value.decode("utf-8", errors="replace")

    def __enter__(self) -> ModelTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_model(path: Path) -> Path:
    """Return ``path`` once llama.cpp has read its header, metadata and tensor table.

    A truncated or corrupt GGUF fails here, in about 0.1 s, rather than in a worker's log.

    Raises:
        ConfigError: the file is corrupt or unreadable.
    """
    ModelTokenizer(path).close()
    return path
