"""One native sampler chain per request, built from its sampling parameters.

The chain runs, in order: repetition penalties (OpenAI's presence and frequency, over the
tokens this request generated), the JSON grammar of its ``json_schema``, then greedy choice at
temperature 0, else top-k, top-p, min-p, temperature and a draw seeded by the request's seed.
Each sequence of a batch owns its chain, so requests of one batch sample independently, and a
seeded draw depends only on its own logits (which do not depend on batch composition).
"""

from __future__ import annotations

from typing import Any

import llama_cpp

from pipeline.errors import InputError
from pipeline.intake.sampling import grammar_of
from workers.backends.base import GenerationRequest

# Sampling defaults for temperature > 0 where the request gives none.
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95


def make_sampler(request: GenerationRequest, vocab: Any) -> Any:
    """A native sampler chain for ``request``; the caller frees it with :func:`free_sampler`.

    Args:
        request: its sampling parameters.
        vocab: the model's native ``llama_vocab`` (the grammar and penalties need it).

    Raises:
        InputError: llama.cpp refused the grammar built from the request's schema.
    """
    stages = _stages(request, vocab)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for stage in stages:
        llama_cpp.llama_sampler_chain_add(chain, stage)
    return chain


def free_sampler(chain: Any) -> None:
    """Free a chain made by :func:`make_sampler` (the chain frees its members)."""
    llama_cpp.llama_sampler_free(chain)


def _stages(request: GenerationRequest, vocab: Any) -> list[Any]:
    # The grammar first: it is the one stage that can be refused, and nothing is leaked then.
    grammar = None if request.json_schema is None else _grammar(request, vocab)
    stages = []
    if request.presence_penalty or request.frequency_penalty:
        stages.append(llama_cpp.llama_sampler_init_penalties(
            llama_cpp.llama_vocab_n_tokens(vocab), request.max_tokens, 1.0,
            request.frequency_penalty, request.presence_penalty))
    if grammar is not None:
        stages.append(grammar)
    if request.temperature <= 0.0:
        return [*stages, llama_cpp.llama_sampler_init_greedy()]
    return stages + _random_stages(request)


def _random_stages(request: GenerationRequest) -> list[Any]:
    top_k = DEFAULT_TOP_K if request.top_k is None else request.top_k
    top_p = DEFAULT_TOP_P if request.top_p is None else request.top_p
    stages = []
    if top_k > 0:
        stages.append(llama_cpp.llama_sampler_init_top_k(top_k))
    stages.append(llama_cpp.llama_sampler_init_top_p(top_p, 1))
    if request.min_p:
        stages.append(llama_cpp.llama_sampler_init_min_p(request.min_p, 1))
    stages.append(llama_cpp.llama_sampler_init_temp(request.temperature))
    stages.append(llama_cpp.llama_sampler_init_dist(request.seed & 0xFFFFFFFF))
    return stages


def _grammar(request: GenerationRequest, vocab: Any) -> Any:
    assert request.json_schema is not None
    try:
        gbnf = grammar_of(dict(request.json_schema))
    except ValueError as e:
        raise InputError(f"request {request.request_id!r}: {e}", field="response_format") from e
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise InputError(f"request {request.request_id!r}: llama.cpp refused the grammar of "
                         "its response_format schema", field="response_format")
    return sampler
