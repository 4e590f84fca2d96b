"""One native sampler per request, built from its sampling parameters.

A request's chain runs, in order: repetition penalties (OpenAI's presence and frequency, over
the tokens this request generated), then greedy choice at temperature 0, else top-k, top-p,
min-p, temperature and a draw seeded by the request's seed. A greedy request without
penalties has no chain at all: its token is the argmax of its logits, the cheapest choice.

The JSON grammar of a ``json_schema`` request is kept apart from its chain and applied the way
llama.cpp's server does (``common_sampler_sample``): the chain picks a token from the free
logits, only that one token is checked against the grammar, and only when the grammar rejects
it is the whole vocabulary masked by the grammar and the chain run again. Masking the whole
vocabulary (5 to 11 ms for SmolLM2's 49,152 tokens, against 3 us for one token; see
``tests/benchmarks/bench_sampling.py``) on every step is what made grammar-held sequences slow
a batch down. A greedy held request, when its argmax is refused, first checks its 64 highest
logits one by one, best first. At temperature 0 the choice is the same in every case: the
highest-logit token the grammar allows, the lowest id among equals.

Each sequence of a batch owns its sampler, so requests of one batch sample independently, and
a seeded draw depends only on its own logits (which do not depend on batch composition).
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np

from pipeline.errors import InputError
from pipeline.intake.sampling import grammar_of
from workers.backends.base import GenerationRequest

# Sampling defaults for temperature > 0 where the request gives none.
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
# Highest logits a greedy grammar-held request checks one by one when the grammar refuses its
# argmax, before it masks the whole vocabulary.
GREEDY_SHORTLIST = 64
# llama.cpp's llama_token_data, so a numpy array can be handed to the samplers in place.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class SequenceSampler:
    """The native samplers of one request: its chain (None for a plain argmax) and its grammar.

    Call :meth:`free` when the sequence ends.

    Attributes:
        grammar_steps: tokens chosen under the grammar.
        grammar_resamples: of those, how many the grammar refused first (each cost a mask of the
            whole vocabulary).
    """

    def __init__(self, request: GenerationRequest, vocab: Any) -> None:
        """Build the samplers for ``request`` over the model's native ``llama_vocab``.

        Raises:
            InputError: llama.cpp refused the grammar built from the request's schema.
        """
        # The grammar first: it is the one stage that can be refused, and nothing is leaked then.
        self._grammar = None if request.json_schema is None else _grammar(request, vocab)
        stages = _chain_stages(request, vocab, held=self._grammar is not None)
        self._chain = _chain(stages) if stages else None
        # a held request whose chain is the greedy choice alone: the argmax, checked
        self._argmax_held = len(stages) == 1 and request.temperature <= 0.0
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._cur: np.ndarray | None = None  # candidates of a grammar-held sequence, reused
        self.grammar_steps = 0
        self.grammar_resamples = 0

    def sample(self, ctx: Any, index: int) -> int:
        """Choose the next token from the logits of row ``index`` of ``ctx``'s last decode,
        and let every sampler of the sequence take it."""
        if self._grammar is not None:
            return self._sample_held(ctx, index)
        if self._chain is None:
            return int(np.argmax(logits_row(ctx, index, self._n_vocab)))
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def free(self) -> None:
        """Free the native samplers (idempotent)."""
        for sampler in (self._chain, self._grammar):
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
        self._chain = self._grammar = None

    def _sample_held(self, ctx: Any, index: int) -> int:
        assert self._chain is not None and self._grammar is not None
        logits = logits_row(ctx, index, self._n_vocab)
        self.grammar_steps += 1
        if self._argmax_held:
            token = int(np.argmax(logits))
            if not self._allows(token):
                self.grammar_resamples += 1
                token = self._best_allowed(logits)
        else:
            cur = self._candidates(logits)
            llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(cur))
            token = int(cur.data[cur.selected].id)
            if not self._allows(token):
                self.grammar_resamples += 1
                token = self._masked_choice(logits)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _best_allowed(self, logits: np.ndarray) -> int:
        """The highest-logit token the grammar allows (the lowest id among equals), as the
        chain would choose from the masked vocabulary: the shortlist of the highest logits is
        checked token by token, best first, and only when none of it passes (or a tie at its
        edge could hide a lower id) is the whole vocabulary masked."""
        top = np.argpartition(logits, -GREEDY_SHORTLIST)[-GREEDY_SHORTLIST:]
        order = top[np.lexsort((top, -logits[top]))]
        edge = logits[order[-1]]
        for token in order:
            if logits[token] <= edge:
                break
            if self._allows(int(token)):
                return int(token)
        return self._masked_choice(logits)

    def _masked_choice(self, logits: np.ndarray) -> int:
        """The chain's choice with the grammar masking the whole vocabulary first."""
        cur = self._candidates(logits)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(cur))
        return int(cur.data[cur.selected].id)

    def _candidates(self, logits: np.ndarray) -> llama_cpp.llama_token_data_array:
        """Every token with its logit, as a fresh candidate array (samplers reorder it)."""
        if self._cur is None:
            self._cur = np.zeros(self._n_vocab, dtype=TOKEN_DATA)
        self._cur["id"] = np.arange(self._n_vocab, dtype=np.int32)
        self._cur["logit"] = logits
        self._cur["p"] = 0.0
        data = ctypes.cast(self._cur.ctypes.data, llama_cpp.llama_token_data_p)
        return llama_cpp.llama_token_data_array(data, self._n_vocab, -1, False)

    def _allows(self, token: int) -> bool:
        """Whether the grammar accepts ``token`` next (checked on a one-token array)."""
        one = llama_cpp.llama_token_data(token, 1.0, 0.0)
        cur = llama_cpp.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        return not math.isinf(one.logit)


def logits_row(ctx: Any, index: int, n_vocab: int) -> np.ndarray:
    """Row ``index`` of the last decode's logits, as a view (valid until the next decode)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))


def _chain(stages: list[Any]) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for stage in stages:
        llama_cpp.llama_sampler_chain_add(chain, stage)
    return chain


def _chain_stages(request: GenerationRequest, vocab: Any, *, held: bool) -> list[Any]:
    """The chain's samplers; none for greedy without penalties nor grammar (a plain argmax)."""
    stages = []
    if request.presence_penalty or request.frequency_penalty:
        stages.append(llama_cpp.llama_sampler_init_penalties(
            llama_cpp.llama_vocab_n_tokens(vocab), request.max_tokens, 1.0,
            request.frequency_penalty, request.presence_penalty))
    if request.temperature > 0.0:
        return stages + _random_stages(request)
    if stages or held:
        return [*stages, llama_cpp.llama_sampler_init_greedy()]
    return []


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
