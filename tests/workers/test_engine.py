"""The continuous-batching engine on the real SmolLM2-135M model and the machine's real meter.

Batches handed to one engine from several threads decode in the same steps; each must come
back as if decoded alone (greedy), with its own share of what the meter read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.errors import BatchTimeLimitError, InputError
from pipeline.fleet.devices import Device, detect_local
from workers.backends.base import GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.meters import make_meter
from workers.service.engine import ContinuousEngine, EngineResult

pytestmark = pytest.mark.slow
N_CTX_PER_SEQ = 384
QUESTIONS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Count from 1 to 30, separated by commas.",
    "Name three colours.",
    "Why is the sky blue?",
    "List the planets of the solar system.",
)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    with BatchedLlamaBackend(str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ,
                             max_batch_size=4) as b:
        yield b


@pytest.fixture(scope="module")
def solo(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    """A second backend, for the reference: each prompt decoded alone."""
    with BatchedLlamaBackend(str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ,
                             max_batch_size=1) as b:
        yield b


@pytest.fixture
def engine(backend: BatchedLlamaBackend) -> Iterator[ContinuousEngine]:
    eng = ContinuousEngine(backend, make_meter(local_device()), n_slots=4)
    yield eng
    eng.close()


def local_device() -> Device:
    """This machine's first device, whose meter a local worker uses."""
    return detect_local()[0]


def batch(tag: str, lengths: list[int]) -> list[GenerationRequest]:
    return [GenerationRequest(request_id=f"{tag}{i}", prompt=QUESTIONS[i % len(QUESTIONS)],
                              max_tokens=n) for i, n in enumerate(lengths)]


def run_together(engine: ContinuousEngine,
                 batches: list[list[GenerationRequest]]) -> list[EngineResult]:
    """Hand every batch to the engine at once, from its own thread (as task threads do)."""
    with ThreadPoolExecutor(len(batches)) as pool:
        futures = [pool.submit(engine.run, b, 60.0, 120.0) for b in batches]
        return [f.result() for f in futures]


def test_batches_share_the_slots_and_each_prompt_decodes_as_alone_greedy_or_seeded(
        engine: ContinuousEngine, solo: BatchedLlamaBackend) -> None:
    # 11 prompts on 4 slots: slots free in any order, and newcomers take the ids freed
    seeded = [dataclasses.replace(r, temperature=0.8, seed=5 + i)
              for i, r in enumerate(batch("c", [16, 12, 26]))]
    batches = [batch("a", [40, 6, 24, 3]), batch("b", [8, 32, 4, 18]), seeded]
    results = run_together(engine, batches)
    for requests, res in zip(batches, results, strict=True):
        assert [r.request_id for r in res.output.results] == [r.request_id for r in requests]
        for req, got in zip(requests, res.output.results, strict=True):
            alone = solo.generate([req]).results[0]
            assert (got.text, got.completion_tokens) == (alone.text, alone.completion_tokens)
    assert engine.n_slots == 4 and not engine.busy


def test_overlapping_batches_split_what_the_meter_read(engine: ContinuousEngine) -> None:
    # 3 + 3 prompts on 4 slots: the second batch starts while the first decodes
    first, second = run_together(engine, [batch("x", [48, 48, 48]), batch("y", [24, 8, 40])])
    ends_first = max(r.latency_s for r in first.output.results)
    assert min(r.ttft_s for r in second.output.results) < ends_first + 1.0
    for res in (first, second):
        assert res.reading.energy_j > 0 and res.reading.duration_s > 0
        assert "shared-interval" in res.reading.notes
        assert math.fsum(res.prompt_energy_j) == pytest.approx(res.reading.energy_j, rel=1e-12)
        assert res.reading.measured == make_meter(local_device()).measured
    total_j = sum(r.reading.total_energy_j for r in (first, second))
    assert total_j == pytest.approx(engine.metered_j, rel=1e-9)
    # each batch's busy seconds are its share: together no more than the wall time they took
    wall_s = max(first.output.wall_s, second.output.wall_s)
    assert first.reading.duration_s + second.reading.duration_s <= wall_s + 0.05


def test_a_batch_past_its_time_limit_is_dropped_and_the_others_go_on(
        engine: ContinuousEngine, solo: BatchedLlamaBackend) -> None:
    runaway = [GenerationRequest(request_id="long", prompt="Tell me a very long story.",
                                 max_tokens=300)]
    quick = batch("q", [12, 20])
    with ThreadPoolExecutor(2) as pool:
        late = pool.submit(engine.run, runaway, 0.5, 120.0)
        ok = pool.submit(engine.run, quick, 60.0, 120.0)
        with pytest.raises(BatchTimeLimitError, match="time limit"):
            late.result()
        done = ok.result()
    assert [r.text for r in done.output.results] == [
        solo.generate([r]).results[0].text for r in quick]
    assert not engine.busy  # the runaway's slot was freed


def test_a_request_that_cannot_run_is_refused_before_anything_decodes(
        engine: ContinuousEngine) -> None:
    too_long = GenerationRequest(request_id="big", prompt="hi", max_tokens=N_CTX_PER_SEQ)
    with pytest.raises(InputError, match="exceeds"):
        engine.run([too_long], 60.0, 120.0)
    assert engine.run(batch("n", [4]), 60.0, 120.0).output.results[0].completion_tokens >= 1


def test_newcomers_take_the_slots_freed_below_running_sequences(
        backend: BatchedLlamaBackend, solo: BatchedLlamaBackend) -> None:
    # The first two finish first, leaving sequences 2 and 3 running: the newcomers must go to
    # free slots (the running ones moved down to 0 and 1), not on top of a running sequence.
    first = batch("f", [2, 2, 30, 30])
    later = batch("l", [20, 5])
    decoder = backend.open_decoder(4)
    seqs = decoder.admit([backend.prepare(r) for r in first], 0.0)
    while len(decoder.running) > 2:
        decoder.step()
    assert sorted(s.seq_id for s in decoder.running) == [0, 1]
    seqs += decoder.admit([backend.prepare(r) for r in later], 0.0)
    assert sorted(s.seq_id for s in decoder.running) == [0, 1, 2, 3]
    while decoder.running:
        decoder.step()
    decoder.clear()
    for req, seq in zip(first + later, seqs, strict=True):
        assert seq.result().text == solo.generate([req]).results[0].text
