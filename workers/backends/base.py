"""The inference backend protocol and the request/result types every backend speaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt of a batch.

    Exactly one of ``prompt`` (raw text, wrapped as a single user message when the model has
    a chat template) or ``messages`` (chat messages, ``role``/``content``) is set.
    """

    request_id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class GenerationResult:
    """The answer to one request, with its own timings."""

    request_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    latency_s: float
    finish_reason: str  # "stop" (EOS or stop string) or "length"


@dataclass(frozen=True)
class BatchOutput:
    """Everything one batched decode produced."""

    results: list[GenerationResult]
    wall_s: float
    peak_memory_bytes: int
    extra: dict[str, float] = field(default_factory=dict)


class InferenceBackend(Protocol):
    """Runs a whole batch as one decode and reports per-prompt timings."""

    model_path: str

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        """Decode ``requests`` together and return one result per request, in order."""
        ...

    def check(self, request: GenerationRequest) -> str | None:
        """Why ``request`` cannot run on this backend (too long, empty, ...), or None if it can."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to with this backend's tokenizer."""
        ...
