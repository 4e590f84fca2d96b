"""A model-free inference backend for dry runs and load tests (``ECOBATCH_BACKEND=echo``).

It speaks the same :class:`~workers.backends.base.InferenceBackend` protocol as the llama.cpp
backend, so the whole pipeline (router, Celery workers, claims, accounting, SQL) runs for real;
only the decode is replaced by a deterministic answer. Tokens are whitespace-separated words,
which keeps counts exact and reproducible without a tokenizer.
"""

from __future__ import annotations

import time

from workers.backends.base import BatchOutput, GenerationRequest, GenerationResult

ECHO_MODEL_PATH = "echo"


def request_text(request: GenerationRequest) -> str:
    """The text of a request: its prompt, or its messages' contents joined by newlines."""
    if request.prompt is not None:
        return request.prompt
    return "\n".join(m.get("content", "") for m in request.messages or [])


class EchoBackend:
    """Answers each request with the first ``max_tokens`` words of its prompt.

    Attributes:
        model_path: always ``"echo"``: no model file is read.
        n_ctx_per_seq: prompt plus completion tokens one request may use, as for llama.cpp.
    """

    model_path = ECHO_MODEL_PATH

    def __init__(self, n_ctx_per_seq: int = 1024) -> None:
        self.n_ctx_per_seq = n_ctx_per_seq

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words of ``text``."""
        return len(text.split())

    def check(self, request: GenerationRequest) -> str | None:
        """Why ``request`` cannot run (empty, or too long for the context), or None."""
        n = self.count_tokens(request_text(request))
        if n == 0:
            return f"request {request.request_id!r}: prompt is empty"
        if n + request.max_tokens > self.n_ctx_per_seq:
            return (f"request {request.request_id!r}: prompt of {n} tokens plus max_tokens "
                    f"{request.max_tokens} exceeds the {self.n_ctx_per_seq}-token context")
        return None

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        """Answer every request at once; timings are the real (tiny) wall time of the call."""
        t0 = time.perf_counter()
        results = [self._answer(r, t0) for r in requests]
        return BatchOutput(results=results, wall_s=time.perf_counter() - t0, peak_memory_bytes=0,
                           extra={"echo": 1.0})

    def _answer(self, request: GenerationRequest, t0: float) -> GenerationResult:
        words = request_text(request).split()
        kept = words[: request.max_tokens]
        elapsed_s = time.perf_counter() - t0
        return GenerationResult(
            request_id=request.request_id, text=" ".join(kept), prompt_tokens=len(words),
            completion_tokens=len(kept), ttft_s=elapsed_s, latency_s=elapsed_s,
            finish_reason="length" if len(words) > request.max_tokens else "stop",
        )
