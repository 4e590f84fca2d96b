"""Turn a request (raw prompt or chat messages) into the exact text the model is fed.

The one renderer: workers feed the model with it, and the submit-time limits count tokens with
it (:mod:`workers.backends.llama.tokenizer`).

A model without a chat template (no ``tokenizer.chat_template`` in its GGUF metadata) is fed a
plain ``prompt`` as it is, and refuses ``messages`` (an :class:`InputError` naming the field):
nothing says how its turns would be joined, so none is made up.
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from pipeline.errors import InputError
from workers.backends.base import GenerationRequest
from workers.backends.llama.native import Vocab, model_meta


def model_formatter(model: Any, vocab: Vocab) -> PromptFormatter:
    """The formatter of a loaded model: its GGUF chat template, with its real BOS and EOS."""
    return PromptFormatter(model_meta(model, "tokenizer.chat_template"),
                           bos_token=vocab.special_text("bos"), eos_token=vocab.special_text("eos"))


class PromptFormatter:
    """Applies the model's chat template (GGUF ``tokenizer.chat_template``) to requests.

    A ``prompt`` request becomes a single user message when the model has a template and is
    fed raw otherwise; ``messages`` always need the template.
    """

    def __init__(self, chat_template: str | None, bos_token: str, eos_token: str):
        self._formatter = (
            Jinja2ChatFormatter(template=chat_template, eos_token=eos_token, bos_token=bos_token)
            if chat_template
            else None
        )

    @property
    def has_template(self) -> bool:
        """Whether the model ships a chat template."""
        return self._formatter is not None

    def render(self, request: GenerationRequest) -> str:
        """The prompt text for ``request``, generation prompt included.

        Raises:
            InputError: neither or both of ``prompt`` and ``messages`` are set, or messages
                are given to a model without a chat template, or the template rejects them.
        """
        if (request.prompt is None) == (request.messages is None):
            raise InputError(
                f"request {request.request_id!r} needs exactly one of prompt or messages",
                field="prompt",
            )
        if request.messages is None:
            assert request.prompt is not None
            if self._formatter is None:
                return request.prompt
            return self._apply([{"role": "user", "content": request.prompt}], request)
        if self._formatter is None:
            raise InputError(
                f"request {request.request_id!r} has messages but the model has no chat template",
                field="messages",
            )
        return self._apply(request.messages, request)

    def _apply(self, messages: list[dict[str, str]], request: GenerationRequest) -> str:
        assert self._formatter is not None
        try:
            return self._formatter(messages=messages).prompt  # type: ignore[arg-type]
        except Exception as e:  # jinja2 errors and the template's raise_exception
            raise InputError(
                f"request {request.request_id!r}: chat template failed: {e}", field="messages"
            ) from e
