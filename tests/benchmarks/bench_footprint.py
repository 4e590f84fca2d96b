"""How long the router takes to size a model: full parse vs header read vs kept footprint.

For the bundled SmolLM2-135M (49k tokens) and a synthetic model with a 150k-token vocabulary
and as many merges (``tests.ggufmodels``), prints the best of ``--repeats`` wall times of
``gguf.GGUFReader`` (what the router used before: it builds every field, vocabulary
included), of :func:`router.live.memory.read_footprint` (the header reader) and of a
:class:`router.live.memory.FootprintCache` lookup in a new process's cache that finds the
footprint in Redis (a restarted router). Goal: header read under 0.2 s for both.

Run: ``python -m tests.benchmarks.bench_footprint [--repeats N]`` (Redis: db 13 unless
ECOBATCH_BENCH_REDIS_URL says otherwise).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf

from pipeline.broker.queue import connect
from pipeline.fleet.devices import Device
from pipeline.fleet.modelfile import default_model_path
from router.live.memory import FootprintCache, file_key, read_footprint
from tests.ggufmodels import write_synthetic_gguf

GOAL_S = 0.2
BIG_VOCAB = 150_000


def best_s(call: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` wall times of ``call()``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(name: str, path: Path, repeats: int, redis_url: str) -> None:
    """Print the three times for one model file."""
    client = connect(redis_url)
    client.delete(file_key(path))
    FootprintCache(client).footprint(Device(name="cpu", kind="cpu", zone="DE-LU"), path)  # stored now
    full_s = best_s(lambda: gguf.GGUFReader(str(path)), max(1, repeats // 3))
    header_s = best_s(lambda: read_footprint(path), repeats)
    kept_s = best_s(lambda: FootprintCache(client).footprint(Device(name="cpu", kind="cpu", zone="DE-LU"),
                                                             path), repeats)
    print(f"{name:<28} {full_s:9.3f} s {header_s:9.4f} s {kept_s:9.4f} s "
          f"{full_s / header_s:7.0f}x  {'ok' if header_s < GOAL_S else 'OVER GOAL'}")
    client.delete(file_key(path))
    client.close()


def main() -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    redis_url = os.environ.get("ECOBATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    print(f"{'model':<28} {'GGUFReader':>11} {'header':>11} {'kept':>11} {'ratio':>8}")
    measure("SmolLM2-135M (49k vocab)", default_model_path(), args.repeats, redis_url)
    with tempfile.TemporaryDirectory() as tmp:
        big = write_synthetic_gguf(Path(tmp) / "big.gguf", BIG_VOCAB)
        measure("synthetic (150k vocab)", big, args.repeats, redis_url)


if __name__ == "__main__":
    main()
