"""The inference backend protocol and the request/result types every backend speaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.intake.sampling import sampling_of


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt of a batch.

    Exactly one of ``prompt`` (raw text, wrapped as a single user message when the model has
    a chat template) or ``messages`` (chat messages, ``role``/``content``) is set. The sampling
    fields are those of :class:`pipeline.intake.sampling.Sampling`, defaults applied: greedy
    at temperature 0; ``top_k``/``top_p`` None take the backend's defaults when sampling.
    ``json_schema``, when set, constrains the answer to JSON matching it.
    """

    request_id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    json_schema: Mapping[str, Any] | None = None


def sampling_fields(stored: dict[str, Any] | None, temperature: float) -> dict[str, Any]:
    """:class:`GenerationRequest` keyword arguments from a prompt's stored sampling.

    Args:
        stored: ``Prompt.sampling`` (:class:`pipeline.intake.sampling.Sampling` as JSON).
        temperature: the temperature where the prompt gives none (``ECOBATCH_TEMPERATURE``).
    """
    s = sampling_of(stored)
    return {
        "temperature": temperature if s.temperature is None else s.temperature,
        "seed": s.seed or 0, "stop": s.stops(), "top_p": s.top_p, "top_k": s.top_k,
        "min_p": s.min_p, "presence_penalty": s.presence_penalty or 0.0,
        "frequency_penalty": s.frequency_penalty or 0.0, "json_schema": s.json_schema(),
    }


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
