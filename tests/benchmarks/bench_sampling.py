"""Per-step cost of a request's samplers on real logits, side by side in one run.

Run with ``python -m tests.benchmarks.bench_sampling`` (not collected by pytest). It decodes one
prompt with the bundled model, then times, on that row of logits:

- a JSON-schema grammar masking the whole vocabulary (what every step of a grammar-held request
  cost before the grammar was kept out of the chain), before the object and inside a string;
- the same grammar checking only the one token the chain chose (what a step costs now unless
  the grammar refuses that token);
- a whole step of :class:`workers.backends.llama.sampling.SequenceSampler` for a greedy, a
  seeded top-k/top-p/min-p and a penalised request.

A grammar-held step now costs the check, plus a whole-vocabulary mask on the steps where the
grammar refuses the chain's token; ``bench_batched --mixed`` prints how often that happens.

A decode step of a batch of 8 on the bundled model takes tens of milliseconds on a small CPU,
so a few milliseconds per grammar-held sequence is what slowed mixed batches down.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np

from pipeline.fleet.modelfile import resolve_model_path
from workers.backends.base import GenerationRequest
from workers.backends.llama.sampling import TOKEN_DATA, SequenceSampler

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "coastal": {"type": "boolean"}},
    "required": ["city", "coastal"], "additionalProperties": False,
}
HELD = GenerationRequest(request_id="s", prompt="Describe a city as JSON.", max_tokens=64,
                         json_schema=SCHEMA)
KINDS = {
    "greedy (argmax)": dataclasses.replace(HELD, json_schema=None),
    "seeded top-k/top-p/min-p": dataclasses.replace(
        HELD, json_schema=None, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05),
    "presence/frequency penalties": dataclasses.replace(
        HELD, json_schema=None, temperature=0.7, presence_penalty=0.5, frequency_penalty=0.5),
}


def time_ms(fn: Callable[[], object], n: int) -> float:
    """Median milliseconds of ``n`` calls."""
    spans = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        spans.append(time.perf_counter() - t0)
    return statistics.median(spans) * 1e3


def mask_all(grammar: Any, logits: np.ndarray, cur: np.ndarray) -> None:
    """The grammar over every token of the vocabulary (the former per-step path)."""
    cur["id"] = np.arange(len(logits), dtype=np.int32)
    cur["logit"] = logits
    data = ctypes.cast(cur.ctypes.data, llama_cpp.llama_token_data_p)
    array = llama_cpp.llama_token_data_array(data, len(logits), -1, False)
    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(array))


def check_one(grammar: Any, token: int) -> None:
    """The grammar over the one chosen token (the path now)."""
    one = llama_cpp.llama_token_data(token, 1.0, 0.0)
    array = llama_cpp.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(array))


def grammar_costs(llm: llama_cpp.Llama, logits: np.ndarray, n: int) -> None:
    """Whole-vocabulary mask vs one-token check, at two states of the grammar."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    cur = np.zeros(len(logits), dtype=TOKEN_DATA)
    token = int(np.argmax(logits))
    for state, text in (("before the object", ""), ("inside a string", '{ "city": "Par')):
        sampler = SequenceSampler(HELD, vocab)
        grammar = sampler._grammar
        for t in llm.tokenize(text.encode(), add_bos=False):
            llama_cpp.llama_sampler_accept(grammar, t)
        full = time_ms(lambda g=grammar: mask_all(g, logits, cur), n)
        one = time_ms(lambda g=grammar: check_one(g, token), n)
        print(f"grammar, {state}: whole vocabulary ({len(logits)} tokens) {full:.3f} ms, "
              f"the chosen token {one:.4f} ms  ({full / one:.0f}x)")
        sampler.free()


def step_costs(llm: llama_cpp.Llama, n: int) -> None:
    """One whole sampling step of each kind of request."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    for name, request in KINDS.items():
        sampler = SequenceSampler(request, vocab)
        print(f"step of a {name} request: {time_ms(lambda s=sampler: s.sample(llm.ctx, -1), n):.3f} ms")
        sampler.free()


def main() -> None:
    """Decode one prompt, then time each sampler on its logits."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="GGUF path (default: the SmolLM2-135M file)")
    p.add_argument("--calls", type=int, default=200, help="timed calls per figure")
    args = p.parse_args()
    llm = llama_cpp.Llama(str(resolve_model_path(args.model)), n_ctx=256, verbose=False)
    llm.eval(llm.tokenize(HELD.prompt.encode()))
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
    grammar_costs(llm, logits.copy(), args.calls)
    step_costs(llm, args.calls)


if __name__ == "__main__":
    main()
