"""A sequence's logits do not depend on its batch-mates, bit for bit, on 2 threads.

ggml's CPU flash attention has three kernels; the decoder keeps every graph on one of them
(see :mod:`workers.backends.llama.decoder`). Greedy text alone rarely shows a difference (a
near-tie argmax flips about once in 64 prompts), so this records the raw logits row of every
token one long request samples, decoded alone and decoded while others come and go in the
second slot, and compares them exactly: past 256 tokens (where a lone sequence would take
the split-KV kernel), with a prompt of more than 64 tokens (the tiled kernel), and with its
chat template's part copied from the prefix cache rather than decoded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from workers.backends.base import GenerationRequest
from workers.backends.llama import decoder as decoder_module
from workers.backends.llama.batched import BatchedLlamaBackend, decode_all
from workers.backends.llama.decoder import PREFILL_TOKENS_PER_CALL, piece_tokens
from workers.backends.llama.sampling import SequenceSampler, logits_row

pytestmark = pytest.mark.slow
THREADS = 2  # the split-KV kernel cuts the cells among threads: one thread hides it
LONG_ID = "long"
# A schema that holds the answer open for about 300 tokens, whatever the model would say.
NUMBERS = {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 999},
           "minItems": 72, "maxItems": 72}
LONG_PROMPT = ("Here is a list of three-digit numbers that a careful clerk copied from an "
               "old ledger, one entry per day of the season, without any gaps or repeats. "
               "Write the whole list out again as a JSON array, keeping every entry in order, "
               "and do not stop before the last entry of the season.")


class RecordingSampler(SequenceSampler):
    """The real sampler; it also keeps a copy of each logits row the long request samples."""

    rows: ClassVar[list[np.ndarray]] = []

    def __init__(self, request: GenerationRequest, vocab: Any) -> None:
        super().__init__(request, vocab)
        self._recording = request.request_id == LONG_ID

    def sample(self, ctx: Any, index: int) -> int:
        if self._recording:
            self.rows.append(logits_row(ctx, index, self._n_vocab).copy())
        return super().sample(ctx, index)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    with BatchedLlamaBackend(str(model_path), n_ctx_per_seq=512, max_batch_size=2,
                             n_threads=THREADS) as b:
        yield b


def logits_rows(backend: BatchedLlamaBackend, requests: list[GenerationRequest],
                monkeypatch: pytest.MonkeyPatch) -> tuple[list[np.ndarray], int]:
    """Every logits row the long request sampled from, decoding ``requests`` in 2 slots, and
    the prompt tokens the prefix cache gave."""
    RecordingSampler.rows = []
    with monkeypatch.context() as m:
        m.setattr(decoder_module, "SequenceSampler", RecordingSampler)
        decoder = backend.open_decoder(len(requests))
        decode_all(decoder, [backend.prepare(r) for r in requests], time.perf_counter())
    return RecordingSampler.rows, decoder.reused_prompt_tokens


def test_logits_alone_and_in_company_are_identical(backend: BatchedLlamaBackend,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    long = GenerationRequest(request_id=LONG_ID, prompt=LONG_PROMPT, max_tokens=400,
                             json_schema=NUMBERS)
    assert len(backend.prepare(long)[1]) > PREFILL_TOKENS_PER_CALL + 1
    alone, reused_alone = logits_rows(backend, [long], monkeypatch)
    mates = [GenerationRequest(request_id=f"m{i}", prompt=f"Tell me about the number {i}.",
                               max_tokens=45) for i in range(7)]
    # the first mate fills the prefix cache: the long prompt's template part is copied
    together, reused = logits_rows(backend, [mates[0], long, *mates[1:]], monkeypatch)
    assert reused_alone == 0 and reused >= 7 * 20
    print(f"{len(alone)} rows, prompt {len(backend.prepare(long)[1])} tokens")
    assert len(alone) > 270  # past the 256 cells where a lone sequence changes kernel
    assert len(together) == len(alone)
    differ = [i for i, (a, b) in enumerate(zip(alone, together, strict=True))
              if not np.array_equal(a, b)]
    assert differ == []


def test_a_prompt_is_fed_in_pieces_below_the_tiled_kernel_without_a_one_token_tail() -> None:
    for remaining in range(1, 300):
        pieces = []
        while remaining:
            pieces.append(piece_tokens(remaining))
            remaining -= pieces[-1]
        assert max(pieces) <= PREFILL_TOKENS_PER_CALL
        assert pieces[-1] > 1 or len(pieces) == 1
