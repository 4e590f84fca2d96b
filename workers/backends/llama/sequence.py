"""Per-sequence state of a batched decode: its tokens, sampler, output bytes and stop rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.backends.base import GenerationRequest, GenerationResult
from workers.backends.llama.native import Vocab
from workers.backends.llama.sampling import SequenceSampler


@dataclass(eq=False)
class Sequence:
    """One request while it decodes in a shared context under its own sequence id.

    Attributes:
        request: what was asked.
        seq_id: llama.cpp sequence id (and KV stream) this request decodes under.
        prompt_tokens: the templated prompt, tokenized.
        sampler: the native samplers owned by this sequence (freed when it leaves).
        origin_s: ``time.perf_counter()`` this sequence's timings count from (its batch's start).
        n_past: position the next token fed to the model takes.
        next_token: last sampled token, fed to the model at the next step.
        batch_index: index of this sequence's logits row in the last decoded batch.
        work_tokens: tokens fed to the model for this sequence so far (its prompt, then one
            per step): the work its share of a metered interval is weighed by.
        first_token_s: seconds from ``origin_s`` to the first sampled token.
        end_s: seconds from ``origin_s`` to the end of this sequence.
        finish_reason: ``"stop"`` or ``"length"`` once done (``"cancelled"`` when dropped),
            else None.
    """

    request: GenerationRequest
    seq_id: int
    prompt_tokens: list[int]
    sampler: SequenceSampler
    origin_s: float = 0.0
    n_past: int = 0
    next_token: int = -1
    batch_index: int = -1
    n_generated: int = 0
    work_tokens: int = 0
    first_token_s: float | None = None
    end_s: float = 0.0
    finish_reason: str | None = None
    _out: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _stops: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _longest_stop: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._stops = tuple(s.encode("utf-8") for s in self.request.stop if s)
        self._longest_stop = max((len(s) for s in self._stops), default=0)

    @property
    def done(self) -> bool:
        """Whether the sequence has finished and left the batch."""
        return self.finish_reason is not None

    def accept(self, token: int, vocab: Vocab, clock_s: float) -> bool:
        """Take the token sampled at ``clock_s`` (``time.perf_counter()``); True when it finishes.

        An end-of-generation token is not counted nor rendered; a stop string ends the
        sequence with the text cut before it; ``max_tokens`` ends it with ``"length"``.
        """
        now_s = clock_s - self.origin_s
        if self.first_token_s is None:
            self.first_token_s = now_s
        if vocab.is_eog(token):
            return self._finish("stop", now_s)
        self.n_generated += 1
        self.next_token = token
        if self._stops and self._append_and_match(vocab.piece(token)):
            return self._finish("stop", now_s)
        if not self._stops:
            self._out += vocab.piece(token)
        if self.n_generated >= self.request.max_tokens:
            return self._finish("length", now_s)
        return False

    def _append_and_match(self, piece: bytes) -> bool:
        # A stop string may straddle pieces, so search from just before the new bytes.
        start = max(0, len(self._out) - self._longest_stop + 1)
        self._out += piece
        cut = min((i for s in self._stops if (i := self._out.find(s, start)) >= 0), default=-1)
        if cut < 0:
            return False
        del self._out[cut:]
        return True

    def _finish(self, reason: str, now_s: float) -> bool:
        self.finish_reason = reason
        self.end_s = now_s
        return True

    def result(self) -> GenerationResult:
        """The finished sequence as a result; bytes are decoded once, here.

        A multi-byte character cut off by ``max_tokens`` is dropped rather than garbled.
        """
        return GenerationResult(
            request_id=self.request.request_id,
            text=self._out.decode("utf-8", errors="ignore"),
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=self.n_generated,
            ttft_s=self.first_token_s if self.first_token_s is not None else self.end_s,
            latency_s=self.end_s,
            finish_reason=self.finish_reason or "length",
        )
