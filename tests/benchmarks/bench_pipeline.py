"""Pipeline throughput against llama-cpp-python called directly, side by side in one run.

Run: ``python -m tests.benchmarks.bench_pipeline [--prompts N] [--max-tokens N]``.

Three measurements on the same prompts, model, max tokens and temperature 0:
1. direct: ``llama_cpp.Llama.create_chat_completion`` per prompt, sequentially (what a user
   would write without ecobatch);
2. direct batched: our batched backend in-process at the pipeline's batch size (no Redis,
   no SQL, no Celery), to separate the pipeline's overhead from batching's gain;
3. pipeline: embedded Redis, SQLite, router and one worker process, submit to last result.
Throughput is completion tokens per wall-clock second. Goal: pipeline >= 0.9 x direct.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from llama_cpp import Llama
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.app.children import ChildGroup
from pipeline.app.embedded import EmbeddedRedis
from pipeline.broker.queue import connect
from pipeline.fleet.modelfile import default_model_path
from pipeline.intake.submit import SubmitHandles, submit_file
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Result
from pipeline.settings import load_settings
from workers.backends.base import GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.tokenizer import ModelTokenizer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


def load_prompts(n: int) -> list[str]:
    """The example prompts, repeated to ``n``."""
    base = [json.loads(line)["prompt"] for line in EXAMPLES.read_text().splitlines()]
    return [base[i % len(base)] for i in range(n)]


def direct_plain(prompts: list[str], max_tokens: int) -> tuple[int, float]:
    """Completion tokens and seconds for the plain API, one prompt after another."""
    # flash attention as in our backend, so both sides run the same kernels and emit the same tokens
    llm = Llama(model_path=str(default_model_path()), n_ctx=1024, flash_attn=True, verbose=False)
    t0 = time.perf_counter()
    tokens = 0
    for p in prompts:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": p}],
                                         max_tokens=max_tokens, temperature=0.0)
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - t0


def direct_batched(prompts: list[str], max_tokens: int, batch_size: int) -> tuple[int, float]:
    """Completion tokens and seconds for our backend in-process, batch after batch."""
    backend = BatchedLlamaBackend(model_path=str(default_model_path()), n_gpu_layers=0,
                                  n_threads=None, n_ctx_per_seq=1024, max_batch_size=batch_size)
    reqs = [GenerationRequest(request_id=str(i), prompt=p, max_tokens=max_tokens)
            for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(reqs), batch_size):
        out = backend.generate(reqs[i : i + batch_size])
        tokens += sum(r.completion_tokens for r in out.results)
    return tokens, time.perf_counter() - t0


def pipeline_run(prompts: list[str], max_tokens: int, batch_size: int) -> tuple[int, float]:
    """Completion tokens and seconds from submit to the last result through the whole pipeline."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as server:
        db_url = f"sqlite:///{tmp}/bench.db"
        env = {"ECOBATCH_REDIS_URL": server.url, "ECOBATCH_DATABASE_URL": db_url,
               "ECOBATCH_BATCH_SIZE": str(batch_size), "ECOBATCH_MAX_WAIT_S": "0.2"}
        engine = make_engine(db_url)
        redis_client = connect(server.url)
        with ChildGroup(env=env, log_dir=Path(tmp) / "logs") as children:
            children.start("router", ["router"])
            children.start("worker", ["worker", "--device", "cpu"])
            _submit(engine, redis_client, Path(tmp), ["warm-up"], max_tokens, batch_size, 1)
            t0 = time.perf_counter()
            _submit(engine, redis_client, Path(tmp), prompts, max_tokens, batch_size, len(prompts) + 1)
            elapsed = time.perf_counter() - t0
        with Session(engine) as s:
            tokens = s.execute(select(func.sum(Result.completion_tokens))).scalar_one()
            warm = s.execute(select(Result.completion_tokens).order_by(Result.created_at)).first()
        return int(tokens) - int(warm[0] if warm else 0), elapsed


def _submit(engine, redis_client, tmp: Path, prompts: list[str], max_tokens: int,  # type: ignore[no-untyped-def]
            batch_size: int, expect_total: int) -> None:
    path = tmp / f"in-{expect_total}.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "max_tokens": max_tokens}) + "\n" for p in prompts))
    handles = SubmitHandles(load_settings(strategy="carbon", max_tokens=max_tokens),
                            ModelTokenizer(None), engine, redis_client)
    submit_file(handles, str(path), fmt="jsonl")
    while True:
        with Session(engine) as s:
            n = s.execute(select(func.count()).select_from(Result)).scalar_one()
        if n >= expect_total:
            return
        time.sleep(0.05)


def main() -> None:
    """Run the three measurements and print throughput and ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    prompts = load_prompts(args.prompts)
    rows = {
        "direct llama-cpp-python (sequential)": direct_plain(prompts, args.max_tokens),
        f"direct batched backend (batch {args.batch_size})":
            direct_batched(prompts, args.max_tokens, args.batch_size),
        f"pipeline (batch {args.batch_size})": pipeline_run(prompts, args.max_tokens, args.batch_size),
    }
    base = rows["direct llama-cpp-python (sequential)"]
    base_tps = base[0] / base[1]
    print(f"{len(prompts)} prompts, max_tokens {args.max_tokens}, SmolLM2-135M Q4_1, CPU")
    for name, (tokens, secs) in rows.items():
        tps = tokens / secs
        print(f"{name:45s} {tokens:6d} tok {secs:7.2f} s {tps:8.1f} tok/s  x{tps / base_tps:.2f}")


if __name__ == "__main__":
    main()
