"""The batched llama.cpp backend, on the real SmolLM2-135M model.

References that do not go through the batched code: ``llama_cpp.Llama`` chat and text
completion on the same model (same attention kernels: flash attention on).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from pipeline.errors import InputError, MemoryBudgetError
from tests.cluster import TEST_LLAMA_THREADS
from workers.backends.base import GenerationRequest, GenerationResult, InferenceBackend
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.chat import PromptFormatter
from workers.backends.llama.prefixcache import OWN_TAIL_TOKENS, common_prefix_len

N_CTX_PER_SEQ = 512
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Count from 1 to 20, separated by commas.",
    "How do you say 'thank you' in Japanese, Chinese and Greek?",
)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    """One backend for the module: the model loads once, the context is reused."""
    with BatchedLlamaBackend(
        str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ, max_batch_size=8,
        n_threads=TEST_LLAMA_THREADS,
    ) as b:
        yield b


@pytest.fixture(scope="module")
def plain_llama(model_path: Path, backend: BatchedLlamaBackend) -> Iterator[llama_cpp.Llama]:
    """The high-level llama-cpp-python API on the same model, as an independent reference."""
    llm = llama_cpp.Llama(
        str(model_path), n_ctx=N_CTX_PER_SEQ, n_threads=backend.n_threads,
        flash_attn=True, verbose=False,
    )
    yield llm
    llm.close()


def ask(request_id: str, prompt: str, max_tokens: int = 24, **kw: object) -> GenerationRequest:
    """A prompt request."""
    return GenerationRequest(request_id=request_id, prompt=prompt, max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


def assert_same_completion(
    got: GenerationResult, ref_text: str, ref_tokens: int, max_tokens: int
) -> None:
    """Our result equals the plain API's, allowing for one quirk of the latter.

    When ``max_tokens`` falls inside a multi-byte character, llama-cpp-python decodes past
    ``max_tokens`` to finish it; we stop at ``max_tokens`` and drop the partial character.
    """
    if ref_tokens <= max_tokens:
        assert (got.text, got.completion_tokens) == (ref_text, ref_tokens)
        return
    assert got.completion_tokens == max_tokens
    assert ref_text.startswith(got.text)
    assert len(ref_text) - len(got.text) == 1 and not ref_text[-1].isascii()


@pytest.mark.slow
def test_is_an_inference_backend(backend: BatchedLlamaBackend) -> None:
    be: InferenceBackend = backend
    assert be.model_path.endswith(".gguf")


@pytest.mark.slow
def test_batch_equals_each_prompt_alone_and_plain_llama(
    backend: BatchedLlamaBackend, plain_llama: llama_cpp.Llama
) -> None:
    requests = [ask(f"r{i}", p, max_tokens=32) for i, p in enumerate(PROMPTS)]
    batched = backend.generate(requests).results
    alone = [backend.generate([r]).results[0] for r in requests]

    assert [r.request_id for r in batched] == ["r0", "r1", "r2", "r3"]
    assert [r.text for r in batched] == [r.text for r in alone]
    for req, got in zip(requests, batched, strict=True):
        ref: Any = plain_llama.create_chat_completion(
            messages=[{"role": "user", "content": req.prompt or ""}],
            max_tokens=req.max_tokens,
            temperature=0.0,
        )
        usage = ref["usage"]
        assert got.prompt_tokens == usage["prompt_tokens"]
        content = ref["choices"][0]["message"]["content"]
        assert_same_completion(got, content, usage["completion_tokens"], req.max_tokens)
    assert "\ufffd" not in batched[3].text and not batched[3].text.isascii()


@pytest.mark.slow
def test_newcomers_copy_the_prompt_prefix_they_share_instead_of_decoding_it(
    backend: BatchedLlamaBackend,
) -> None:
    """The first prompt fills the prefix cache; each later one gets the part it shares with it
    (its chat template's system part), less the two tokens it always feeds itself; a prompt of
    another shape shares too little and takes the cache over."""
    requests = [ask(f"c{i}", p, max_tokens=4) for i, p in enumerate(PROMPTS)]
    other = GenerationRequest(request_id="other", max_tokens=4, messages=[
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}])
    tokens = [backend.prepare(r)[1] for r in requests]
    cached, expected = tokens[0], 0
    for toks in tokens[1:]:
        shared = min(common_prefix_len(cached, toks), len(toks) - OWN_TAIL_TOKENS)
        cached, expected = cached[:shared], expected + shared
    assert expected >= 3 * 20  # SmolLM2's template: 24 tokens before each question
    out = backend.generate(requests)
    assert out.extra["prompt_tokens_reused"] == expected
    assert [r.text for r in out.results] == [backend.generate([r]).results[0].text
                                             for r in requests]
    # another system part: shares 3 tokens, takes the cache over; then r1 shares 3 with it
    with_other = backend.generate([requests[0], other, requests[1]])
    assert with_other.extra["prompt_tokens_reused"] == 0


@pytest.mark.slow
def test_token_by_token_greedy_reference(
    backend: BatchedLlamaBackend, plain_llama: llama_cpp.Llama
) -> None:
    """Greedy argmax over the plain API's logits, one token at a time, gives the same text."""
    req = ask("g", PROMPTS[1], max_tokens=16)
    got = backend.generate([req, ask("other", PROMPTS[2])]).results[0]
    plain_llama.reset()
    tokens = plain_llama.tokenize(backend.format_prompt(req).encode(), special=True)
    vocab = llama_cpp.llama_model_get_vocab(plain_llama.model)
    out: list[int] = []
    for token in plain_llama.generate(tokens, temp=0.0):
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) == 16:
            break
        out.append(token)
    assert got.text == plain_llama.detokenize(out).decode("utf-8", errors="ignore")
    assert got.completion_tokens == len(out)


@pytest.mark.slow
def test_finished_sequences_leave_early(backend: BatchedLlamaBackend) -> None:
    long_prompt = "Write a long story about a dragon who learns to cook."
    limits = [3, 17, 8, 24]
    requests = [ask(f"m{n}", long_prompt, max_tokens=n) for n in limits]
    requests.append(ask("eos", "What is 2+2?", max_tokens=24))
    out = backend.generate(requests)
    full = backend.generate([ask("full", long_prompt, max_tokens=24)]).results[0]

    for n, res in zip(limits, out.results, strict=False):
        assert res.completion_tokens == n
        assert res.finish_reason == "length"
        assert full.text.startswith(res.text)
    eos = out.results[-1]
    assert eos.finish_reason == "stop" and eos.completion_tokens < 24
    by_limit = sorted(zip(limits, out.results, strict=False))
    latencies = [r.latency_s for _, r in by_limit]
    assert latencies == sorted(latencies) and latencies[0] < latencies[-1]
    assert all(0 < r.ttft_s <= r.latency_s <= out.wall_s for r in out.results)
    assert out.peak_memory_bytes > 0


@pytest.mark.slow
def test_sequences_moved_into_freed_slots_decode_unchanged(backend: BatchedLlamaBackend) -> None:
    """Early finishers at low ids leave holes; the running ones are moved down, unchanged."""
    requests = [ask(f"h{i}", PROMPTS[i % 4], max_tokens=3 if i % 2 == 0 else 28) for i in range(6)]
    together = backend.generate(requests).results
    alone = [backend.generate([r]).results[0] for r in requests]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]


@pytest.mark.slow
def test_stop_strings_cut_the_text(backend: BatchedLlamaBackend) -> None:
    prompt = PROMPTS[2]
    free = backend.generate([ask("free", prompt, max_tokens=32)]).results[0]
    stop = "4. 4"  # spans several tokens
    assert stop in free.text
    out = backend.generate(
        [ask("stopped", prompt, max_tokens=32, stop=("never-there", stop)), ask("free", prompt, 32)]
    ).results
    assert out[0].text == free.text[: free.text.index(stop)]
    assert out[0].finish_reason == "stop"
    assert out[0].completion_tokens < free.completion_tokens
    assert out[1].text == free.text


@pytest.mark.slow
def test_seeded_sampling_does_not_depend_on_batch_mates(backend: BatchedLlamaBackend) -> None:
    hot = ask("hot", PROMPTS[1], max_tokens=24, temperature=0.9, seed=1234)
    alone = backend.generate([hot]).results[0]
    together = backend.generate([ask("a", PROMPTS[0], temperature=0.7, seed=1), hot]).results[1]
    other_seed = backend.generate([ask("x", PROMPTS[1], 24, temperature=0.9, seed=99)]).results[0]
    assert together.text == alone.text
    assert other_seed.text != alone.text


@pytest.mark.slow
def test_messages_and_prompt_render_alike(backend: BatchedLlamaBackend) -> None:
    as_prompt = ask("p", PROMPTS[0], max_tokens=12)
    as_messages = GenerationRequest(
        request_id="m", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=12
    )
    assert backend.format_prompt(as_prompt) == backend.format_prompt(as_messages)
    a, b = backend.generate([as_prompt, as_messages]).results
    assert a.text == b.text
    assert backend.count_tokens(backend.format_prompt(as_prompt)) == a.prompt_tokens


@pytest.mark.slow
def test_batch_larger_than_memory_allows_decodes_in_the_slots_that_fit(
        model_path: Path, backend: BatchedLlamaBackend) -> None:
    budget = [0]
    with BatchedLlamaBackend(
        str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ, max_batch_size=8,
        free_memory_bytes=lambda: budget[0], n_threads=TEST_LLAMA_THREADS,
    ) as small:
        budget[0] = int(2.5 * small.sequence_memory_bytes)
        requests = [ask(f"s{i}", PROMPTS[i % 4], max_tokens=12) for i in range(5)]
        out = small.generate(requests)
    assert out.extra["slots"] == 2.0  # two fit: each freed slot takes the next request
    assert [r.request_id for r in out.results] == [f"s{i}" for i in range(5)]
    reference = backend.generate(requests).results
    assert [r.text for r in out.results] == [r.text for r in reference]
    first_free_s = min(r.latency_s for r in out.results[:2])
    assert out.results[4].ttft_s > first_free_s  # the last one waited for a slot


@pytest.mark.slow
def test_memory_for_not_even_one_sequence(model_path: Path) -> None:
    budget = [0]
    with BatchedLlamaBackend(
        str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ, free_memory_bytes=lambda: budget[0]
    ) as small:
        budget[0] = small.sequence_memory_bytes // 2
        with pytest.raises(MemoryBudgetError, match="free"):
            small.generate([ask("one", PROMPTS[0])])
        budget[0] = small.sequence_memory_bytes  # the worker survives and goes on
        assert small.generate([ask("one", PROMPTS[0], max_tokens=4)]).results[0].text


@pytest.mark.slow
def test_over_long_prompt_is_refused_by_id(backend: BatchedLlamaBackend) -> None:
    long_text = "Please summarise: " + "the quick brown fox jumps over the lazy dog. " * 60
    requests = [ask("fine", PROMPTS[0]), ask("too-long", long_text)]
    with pytest.raises(InputError, match="too-long"):
        backend.generate(requests)
    fits_alone = backend.count_tokens(backend.format_prompt(ask("x", PROMPTS[0])))
    with pytest.raises(InputError, match=r"'tight'.*max_tokens"):
        backend.generate([ask("tight", PROMPTS[0], max_tokens=N_CTX_PER_SEQ - fits_alone + 1)])
    assert backend.generate([requests[0]]).results[0].request_id == "fine"


@pytest.mark.slow
def test_bad_requests_are_input_errors(backend: BatchedLlamaBackend) -> None:
    with pytest.raises(InputError, match="exactly one"):
        backend.generate([GenerationRequest(request_id="none")])
    with pytest.raises(InputError, match="max_tokens"):
        backend.generate([ask("zero", "hi", max_tokens=0)])
    assert backend.generate([]).results == []


def test_formatter_without_template_feeds_prompt_raw() -> None:
    fmt = PromptFormatter(None, bos_token="", eos_token="")
    assert fmt.render(ask("raw", "Once upon a time")) == "Once upon a time"
    with pytest.raises(InputError, match="no chat template"):
        fmt.render(GenerationRequest(request_id="m", messages=[{"role": "user", "content": "x"}]))


