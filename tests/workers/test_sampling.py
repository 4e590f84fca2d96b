"""Per-request sampling in the batched decoder, on the real SmolLM2-135M model.

Each sequence of a batch has its own sampler chain: greedy requests decode as they would
alone, a seeded request repeats itself in any batch, and a ``json_schema`` request is held to
its schema by grammar while its batch-mates decode freely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.errors import InputError
from pipeline.intake.parse import validate_records
from tests.cluster import TEST_LLAMA_THREADS
from workers.backends.base import GenerationRequest, sampling_fields
from workers.backends.llama.batched import BatchedLlamaBackend

pytestmark = pytest.mark.slow

CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0},
        "coastal": {"type": "boolean"},
    },
    "required": ["city", "population_millions", "coastal"],
    "additionalProperties": False,
}
PLAIN = ("What is the capital of France?", "Write a haiku about the sea.",
         "Count from 1 to 10.", "Name three colours.")


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    with BatchedLlamaBackend(str(model_path), n_ctx_per_seq=256, max_batch_size=24,
                             n_threads=TEST_LLAMA_THREADS) as b:
        yield b


def plain(i: int) -> GenerationRequest:
    return GenerationRequest(request_id=f"p{i}", prompt=PLAIN[i], max_tokens=24)


def story(rid: str, seed: int, **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt="Tell me a short story about a fox.",
                             max_tokens=24, temperature=0.9, seed=seed, **kw)


def texts(backend: BatchedLlamaBackend, requests: list[GenerationRequest]) -> list[str]:
    return [r.text for r in backend.generate(requests).results]


def test_the_same_seed_repeats_in_any_batch_and_another_seed_differs(
    backend: BatchedLlamaBackend,
) -> None:
    alone = texts(backend, [story("a", 7)])[0]
    in_batch = texts(backend, [plain(0), story("b", 1), story("c", 7), plain(1)])
    twice = texts(backend, [story("d", 7), story("e", 7)])
    assert in_batch[2] == alone and twice == [alone, alone]
    assert in_batch[1] != alone
    greedy = texts(backend, [GenerationRequest(request_id="g", prompt=PLAIN[0], max_tokens=24)])
    assert alone != greedy[0]


def test_a_mixed_batch_holds_schema_requests_to_their_schema_and_leaves_the_rest_alone(
    backend: BatchedLlamaBackend,
) -> None:
    solo = [texts(backend, [plain(i)])[0] for i in range(len(PLAIN))]
    constrained = [
        GenerationRequest(request_id=f"s{i}", prompt=f"Describe city number {i} as JSON.",
                          max_tokens=96, temperature=0.0 if i % 2 else 0.8, seed=i,
                          json_schema=CITY_SCHEMA)
        for i in range(20)
    ]
    batch = constrained[:10] + [plain(i) for i in range(len(PLAIN))] + constrained[10:]
    results = backend.generate(batch).results
    by_id = {r.request_id: r for r in results}
    for req in constrained:
        answer = by_id[req.request_id]
        assert answer.finish_reason == "stop", answer.text
        jsonschema.validate(json.loads(answer.text), CITY_SCHEMA)
    assert [by_id[f"p{i}"].text for i in range(len(PLAIN))] == solo
    held_greedy = [r for r in constrained if r.temperature == 0.0][:3]
    assert [by_id[r.request_id].text for r in held_greedy] == [
        texts(backend, [r])[0] for r in held_greedy]  # held by grammar, greedy decodes as alone


def test_json_object_gives_an_object(backend: BatchedLlamaBackend) -> None:
    text = "Give a JSON object with keys name and age for Alice, 30."
    [record] = validate_records([{"prompt": text, "response_format": {"type": "json_object"}}])
    assert record.sampling is not None
    fields = sampling_fields(record.sampling.stored(), 0.0)
    req = GenerationRequest(request_id="o", prompt=text, max_tokens=64, **fields)
    answer = backend.generate([req]).results[0]
    assert answer.finish_reason == "stop" and isinstance(json.loads(answer.text), dict)


def test_penalties_top_k_and_min_p_change_sampling_but_keep_it_seeded(
    backend: BatchedLlamaBackend,
) -> None:
    base = texts(backend, [story("a", 3)])[0]
    variants = [story("k", 3, top_k=1), story("m", 3, min_p=0.3, top_p=0.5),
                story("f", 3, frequency_penalty=2.0, presence_penalty=2.0)]
    first, second = texts(backend, variants), texts(backend, variants[::-1])[::-1]
    assert first == second
    assert any(t != base for t in first)


def test_a_schema_llama_cpp_cannot_hold_is_refused_alone(backend: BatchedLlamaBackend) -> None:
    bad = GenerationRequest(request_id="x", prompt="hi", json_schema={"type": "frob"})
    assert "response_format" in (backend.check(bad) or "")
    with pytest.raises(InputError):
        backend.generate([bad])
