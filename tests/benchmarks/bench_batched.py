"""Side-by-side throughput of the batched backend against sequential decoding.

Run with ``python -m tests.benchmarks.bench_batched`` (not collected by pytest). On one prompt
set it measures, interleaved round by round so that machine noise hits every configuration:

- ``plain``: ``llama_cpp.Llama.create_completion`` per prompt, one after another;
- ``ours-b1``: :class:`workers.backends.llama.batched.BatchedLlamaBackend` with one prompt per batch;
- ``ours-bN``: the same backend with N prompts per batch;
- ``mixed-bN`` (with ``--mixed``): the same batches with per-request sampling mixed in: a
  quarter greedy, a quarter seeded top-k/top-p/min-p sampling, a quarter with presence and
  frequency penalties, a quarter held to a JSON schema by grammar.

- ``greedy-bN`` (with ``--mixed``): all greedy again, each request capped at the length its
  mixed twin reached, so that its batches hold as many sequences at every step as the mixed ones.

The greedy runs decode with the same attention kernels, so they produce the same tokens (the
script checks), and tokens per second compare like with like; ``mixed-bN`` produces other
tokens, and its sequences end at other steps (a JSON answer closes early), so a mixed batch
runs its last steps with fewer sequences. ``--mixed`` prints the ratio of mixed to all-greedy
batches of the same size, over whole batches and over their decode steps alone, against
``ours-bN`` and against the length-matched ``greedy-bN``: the latter is what the per-sequence
samplers cost. ``--skip-sequential`` leaves out ``plain`` and ``ours-b1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from pipeline.fleet.modelfile import resolve_model_path
from workers.backends.base import GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.native import default_thread_count

PROMPTS = (
    "What is the capital of Australia, and why was it chosen over Sydney?",
    "Give me three practical tips for sleeping better during a heatwave.",
    "Explain in simple terms how a heat pump warms a house.",
    "What is the difference between weather and climate?",
    "Write a short, friendly email asking a colleague to review my report.",
    "How do solar panels turn sunlight into electricity?",
    "Summarise the plot of Romeo and Juliet in a few sentences.",
    "Why do leaves change colour in autumn?",
)


@dataclass
class Series:
    """Timings of one configuration over the rounds."""

    name: str
    tokens: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    decode_tok_per_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    grammar_steps: float = 0.0
    grammar_resamples: float = 0.0

    def tok_per_s(self) -> list[float]:
        """Generated tokens per second of each round."""
        return [t / w for t, w in zip(self.tokens, self.wall_s, strict=True)]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="GGUF path (default: the SmolLM2-135M file)")
    p.add_argument("--max-tokens", type=int, default=96, help="completion tokens per prompt")
    p.add_argument("--batch-sizes", default="4,8,16", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--n-ubatch", type=int, default=512, help="llama.cpp physical batch size")
    p.add_argument("--no-flash-attn", action="store_true", help="use the plain attention path")
    p.add_argument("--mixed", action="store_true", help="also time batches of mixed sampling")
    p.add_argument("--skip-sequential", action="store_true",
                   help="leave out the sequential configurations (plain, ours-b1)")
    return p.parse_args()


def run_plain(llm: llama_cpp.Llama, prompts: list[str], max_tokens: int, s: Series) -> None:
    """One ``create_completion`` per prompt, sequentially (no TTFT: it does not stream)."""
    tokens, texts = 0, []
    t0 = time.perf_counter()
    for prompt in prompts:
        out: Any = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
        texts.append(out["choices"][0]["text"])
        tokens += out["usage"]["completion_tokens"]
    s.wall_s.append(time.perf_counter() - t0)
    s.tokens.append(tokens)
    s.ttft_s.append(math.nan)
    s.decode_tok_per_s.append(math.nan)
    s.texts = texts


def run_ours(
    backend: BatchedLlamaBackend, requests: list[GenerationRequest], batch: int, s: Series
) -> None:
    """The requests in consecutive batches of ``batch``."""
    results = []
    decode_tokens, decode_s = 0, 0.0
    t0 = time.perf_counter()
    for i in range(0, len(requests), batch):
        output = backend.generate(requests[i : i + batch])
        out = output.results
        s.grammar_steps += output.extra.get("grammar_steps", 0.0)
        s.grammar_resamples += output.extra.get("grammar_resamples", 0.0)
        # After the prefill every sequence decodes in lockstep until the last one finishes.
        decode_tokens += sum(r.completion_tokens - 1 for r in out)
        decode_s += max(r.latency_s for r in out) - max(r.ttft_s for r in out)
        results.extend(out)
    s.wall_s.append(time.perf_counter() - t0)
    s.tokens.append(sum(r.completion_tokens for r in results))
    s.ttft_s.append(statistics.median(r.ttft_s for r in results))
    s.decode_tok_per_s.append(decode_tokens / decode_s if decode_s > 0 else math.nan)
    s.texts = [r.text for r in results]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 200}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"], "additionalProperties": False,
}
MIXES: tuple[dict[str, Any], ...] = (
    {},
    {"temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 0.7, "presence_penalty": 0.5, "frequency_penalty": 0.5},
    {"json_schema": SCHEMA},
)


def length_matched(backend: BatchedLlamaBackend, requests: list[GenerationRequest],
                   mixed: list[GenerationRequest], batch: int) -> list[GenerationRequest]:
    """``requests`` (greedy) each capped at the completion length of its ``mixed`` twin."""
    lengths = [r.completion_tokens for i in range(0, len(mixed), batch)
               for r in backend.generate(mixed[i : i + batch]).results]
    return [dataclasses.replace(r, max_tokens=max(1, n)) for r, n in zip(requests, lengths, strict=True)]


def mixed_requests(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    """The same prompts with the sampling of :data:`MIXES` in turn, each seeded by its index."""
    return [dataclasses.replace(r, seed=i, **MIXES[i % len(MIXES)])
            for i, r in enumerate(requests)]


def report(series: list[Series], batch_sizes: list[int]) -> None:
    """Print one line per configuration, then the ratios asked for.

    tok/s counts every generated token over the whole wall time, prefill included;
    decode-only leaves out each batch's prefill (the plain API does not expose it).
    """
    print(
        f"\n{'config':<10} {'tokens':>7} {'tok/s median':>13} {'tok/s best':>11} "
        f"{'decode-only tok/s':>18} {'ttft median s':>14}  tok/s per round"
    )
    med: dict[str, float] = {}
    for s in series:
        rates = s.tok_per_s()
        med[s.name] = statistics.median(rates)
        print(
            f"{s.name:<10} {s.tokens[-1]:>7} {med[s.name]:>13.1f} {max(rates):>11.1f} "
            f"{statistics.median(s.decode_tok_per_s):>18.1f} "
            f"{statistics.median(s.ttft_s):>14.3f}  {[round(r, 1) for r in rates]}"
        )
    print()
    for b in batch_sizes:
        name = f"ours-b{b}"
        if "plain" in med:
            print(f"{name} / ours-b1 (sequential) = {med[name] / med['ours-b1']:.2f}x   "
                  f"{name} / plain API = {med[name] / med['plain']:.2f}x")
    decode = {s.name: statistics.median(s.decode_tok_per_s) for s in series}
    for b in batch_sizes:
        mixed = f"mixed-b{b}"
        for greedy, what in ((f"ours-b{b}", "all greedy"), (f"greedy-b{b}", "greedy, same lengths")):
            if mixed in med:
                print(f"{mixed} / {greedy} ({what}) = {med[mixed] / med[greedy]:.2f}x tok/s   "
                      f"decode-only {decode[mixed] / decode[greedy]:.2f}x")
    for s in series:
        if s.grammar_steps:
            print(f"{s.name}: the grammar refused the chain's first choice at "
                  f"{s.grammar_resamples:.0f} of {s.grammar_steps:.0f} grammar-held steps "
                  f"({100 * s.grammar_resamples / s.grammar_steps:.1f}%)")
    same = all(s.texts == series[0].texts for s in series if s.name.startswith(("plain", "ours")))
    print(f"\nidentical greedy outputs across all configurations: {'yes' if same else 'NO'}")
    mixed_texts = [s.texts for s in series if s.name.startswith("mixed")]
    if len(mixed_texts) > 1:  # seeded sampling does not depend on batch composition
        same_mixed = all(t == mixed_texts[0] for t in mixed_texts)
        print(f"identical mixed outputs across batch sizes: {'yes' if same_mixed else 'NO'}")


def main() -> None:
    """Load both engines once, then time every configuration round by round."""
    args = parse_args()
    model_path = str(resolve_model_path(args.model))
    threads = args.threads or default_thread_count()
    flash_attn = not args.no_flash_attn
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    n_requests = len(PROMPTS) * math.ceil(max(batch_sizes) / len(PROMPTS))
    n_ctx_per_seq = 512
    backend = BatchedLlamaBackend(
        model_path, n_threads=threads, n_ctx_per_seq=n_ctx_per_seq,
        max_batch_size=max(batch_sizes), n_ubatch=args.n_ubatch, flash_attn=flash_attn,
    )
    llm = llama_cpp.Llama(
        model_path, n_ctx=n_ctx_per_seq, n_threads=threads, n_threads_batch=threads,
        n_ubatch=args.n_ubatch, flash_attn=flash_attn, verbose=False,
    )
    requests = [
        GenerationRequest(request_id=str(i), prompt=PROMPTS[i % len(PROMPTS)],
                          max_tokens=args.max_tokens)
        for i in range(n_requests)
    ]
    prompts = [backend.format_prompt(r) for r in requests]
    print(f"{n_requests} prompts, max_tokens {args.max_tokens}, threads {threads}, "
          f"n_ubatch {args.n_ubatch}, flash_attn {flash_attn}, rounds {args.rounds}")
    configs: list[tuple[Series, Callable[[Series], None]]] = [] if args.skip_sequential else [
        (Series("plain"), lambda s: run_plain(llm, prompts, args.max_tokens, s)),
        (Series("ours-b1"), lambda s: run_ours(backend, requests, 1, s)),
    ]
    for b in batch_sizes:
        configs.append((Series(f"ours-b{b}"), functools.partial(run_ours, backend, requests, b)))
    if args.mixed:
        mixed = mixed_requests(requests)
        for b in batch_sizes:
            configs.append((Series(f"mixed-b{b}"), functools.partial(run_ours, backend, mixed, b)))
            matched = length_matched(backend, requests, mixed, b)
            configs.append((Series(f"greedy-b{b}"), functools.partial(run_ours, backend, matched, b)))
    run_ours(backend, requests[:2], 2, Series("warm-up"))
    run_plain(llm, prompts[:1], 8, Series("warm-up"))
    for _ in range(args.rounds):
        for s, fn in configs:
            fn(s)
    report([s for s, _ in configs], batch_sizes)


if __name__ == "__main__":
    main()
