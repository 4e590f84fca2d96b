"""Continuous against static batching in one device worker, on varied output lengths.

Run with ``python -m tests.benchmarks.bench_continuous`` (not collected by pytest). The same
prompts, each with its own ``max_tokens`` drawn from a seeded log-normal (output lengths of
real traces span two orders of magnitude), cut into batches of ``--batch`` and decoded:

- ``static``: one batch after another, each to its longest sequence
  (:meth:`BatchedLlamaBackend.generate`, what a worker did before continuous batching);
- ``continuous``: every batch handed at once to one
  :class:`workers.service.engine.ContinuousEngine` with ``--batch`` slots, from its own thread
  (as the worker's task threads do): a freed slot takes the next prompt at the next step.

Rounds alternate the two so that machine noise hits both. Both decode greedily with the same
kernels, so they produce the same tokens (checked); completion tokens per second compare like
with like.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from pipeline.fleet.devices import detect_local
from pipeline.fleet.modelfile import resolve_model_path
from tests.benchmarks.bench_batched import PROMPTS
from workers.backends.base import GenerationRequest, GenerationResult
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.meters import make_meter
from workers.service.engine import ContinuousEngine


def lognormal_lengths(n: int, low: int, high: int, seed: int = 7) -> list[int]:
    """``n`` output lengths from a log-normal spanning ``low``..``high`` (clamped), seeded."""
    rng = random.Random(seed)
    mu, sigma = (low * high) ** 0.5, 0.9
    return [min(high, max(low, round(rng.lognormvariate(0.0, sigma) * mu))) for _ in range(n)]


def requests_for(n: int, low: int, high: int) -> list[GenerationRequest]:
    return [GenerationRequest(request_id=f"r{i}", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=m)
            for i, m in enumerate(lognormal_lengths(n, low, high))]


def static(backend: BatchedLlamaBackend, reqs: list[GenerationRequest], size: int
           ) -> tuple[float, list[GenerationResult]]:
    t0 = time.perf_counter()
    results: list[GenerationResult] = []
    for i in range(0, len(reqs), size):
        results += backend.generate(reqs[i:i + size]).results
    return time.perf_counter() - t0, results


def continuous(engine: ContinuousEngine, reqs: list[GenerationRequest], size: int
               ) -> tuple[float, list[GenerationResult]]:
    batches = [reqs[i:i + size] for i in range(0, len(reqs), size)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(batches)) as pool:
        outs = list(pool.map(lambda b: engine.run(b, 3600.0, 7200.0), batches))
    return time.perf_counter() - t0, [r for o in outs for r in o.output.results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--min-tokens", type=int, default=9)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    reqs = requests_for(args.prompts, args.min_tokens, args.max_tokens)
    path = str(resolve_model_path(None))
    with BatchedLlamaBackend(path, n_ctx_per_seq=512, max_batch_size=args.batch) as backend:
        engine = ContinuousEngine(backend, make_meter(detect_local()[0]), args.batch)
        rates: dict[str, list[float]] = {"static": [], "continuous": []}
        tokens = 0
        for _ in range(args.rounds):
            engine_s, engine_res = continuous(engine, reqs, args.batch)
            static_s, static_res = static(backend, reqs, args.batch)
            assert [r.text for r in engine_res] == [r.text for r in static_res], \
                "continuous output differs from static"
            tokens = sum(r.completion_tokens for r in static_res)
            rates["static"].append(tokens / static_s)
            rates["continuous"].append(tokens / engine_s)
        engine.close()
    lengths = [r.max_tokens for r in reqs]
    print(f"{args.prompts} prompts, max_tokens {min(lengths)}-{max(lengths)} "
          f"(median {statistics.median(lengths)}), batch {args.batch}, {args.rounds} rounds, "
          f"~{tokens} completion tokens per round")
    base = statistics.median(rates["static"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:<11} {med:7.1f} tok/s (rounds: {', '.join(f'{x:.1f}' for x in r)})"
              f"  x{med / base:.2f} of static")


if __name__ == "__main__":
    main()
