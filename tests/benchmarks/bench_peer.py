"""ecobatch against llama.cpp's own server and batched bench, side by side in one run (issue 13).

Run: ``python -m tests.benchmarks.bench_peer [--quick] [--json FILE]`` or ``make bench-peer``.
The first run builds ``llama-server`` and ``llama-batched-bench`` from the llama.cpp vendored in
the pinned llama-cpp-python sdist (about 8 minutes on 2 cores; :mod:`tests.benchmarks.llamabin`).

Varied lengths, per configuration (default: the issue's two, 32 prompts with max_tokens 9-128 at
8 slots and 64 prompts with 15-256 at 4 slots): the example prompts, each with its own
``max_tokens`` drawn from a seeded log-normal with the spread (sigma of log) of the Azure
trace's generated tokens, centred on the range's geometric mean and clipped to it. Greedy
(temperature 0), normal end-of-generation behaviour, flash attention on, 2 threads, the
SmolLM2-135M Q4_1 model, ``--ctx-per-seq`` context tokens per slot on both sides.

- llama-server, ``-np SLOTS``: every prompt sent at once, as token ids of the same chat-templated
  text ecobatch feeds its model; completion tokens/s = the server's ``tokens_predicted`` summed
  (it counts a final end-of-generation token, ecobatch does not) / seconds from the first send
  to the last answer. A fresh server for each run, started and healthy before the clock starts;
  it runs before and again after ecobatch, so the pair shows the machine's noise.
- ecobatch pipeline, batch SLOTS: ``ecobatch run`` on a JSONL (embedded Redis, SQLite, router
  and one worker as child processes). Completion tokens/s = completion tokens of the results /
  the ledger's processing window, from the first batch's ``started_at`` to the last batch's
  ``finished_at`` (the worker loads the model inside the first batch, so that load counts; the
  start of Redis, router and worker does not). The whole command's wall time is shown too.
  ``--rounds N`` repeats the pair (ecobatch, llama-server again); ratios are of the medians.

Every run also says what share of the cores other processes took meanwhile
(:mod:`tests.benchmarks.cpunoise`): on a shared machine a run with a high share was slowed by a
neighbour, and its ratio means little.

Uniform lengths: ``llama-batched-bench -npp P -ntg G -npl 1,4,8`` decode tokens/s (``S_TG``), the
ceiling, against ecobatch's batched backend in-process on 1/4/8 prompts of about P tokens that
each decode G tokens without reaching end of generation (decode tokens/s as in
``bench_batched``: tokens after the first over the time after the last first token).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import llama_cpp
import numpy as np
from rich.console import Console
from sqlalchemy import func, select
from sqlmodel import Session, col

from pipeline.fleet.modelfile import default_model_path
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, BatchStatus
from router.sim.arrivals import read_trace
from tests.benchmarks.bench_batched import Series, run_ours
from tests.benchmarks.bench_pipeline import load_prompts
from tests.benchmarks.cpunoise import Noise, T, others_cpu, quietest
from tests.benchmarks.llamabin import LlamaBinaries, ensure_binaries
from tests.benchmarks.llamapeer import batched_bench, complete_all, llama_server
from tests.benchmarks.peertable import notes, render
from workers.backends.base import GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.chat import model_formatter
from workers.backends.llama.native import Vocab
from workers.backends.llama.tokenizer import load_vocab_only

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ("a lighthouse keeper", "a lost robot", "a desert caravan", "a city under the sea",
          "a dragon who hates fire", "a clockmaker's apprentice", "a journey to Mars",
          "a village school", "a haunted library", "a river that flows uphill")
FILLER = " Take your time, describe every place, every person and every feeling in great detail."


@dataclass(frozen=True)
class Config:
    """One varied-length comparison: how many prompts, at how many slots, in which length range."""

    prompts: int
    slots: int
    min_tokens: int
    max_tokens: int

    def label(self) -> str:
        """The table's name of this configuration."""
        return (f"{self.prompts} prompts, max_tokens {self.min_tokens}-{self.max_tokens}, "
                f"{self.slots} slots")


ISSUE_CONFIGS = (Config(32, 8, 9, 128), Config(64, 4, 15, 256))
QUICK_CONFIG = Config(8, 4, 9, 32)


@dataclass(frozen=True)
class PipelineRun:
    """What one ``ecobatch run`` produced and how long it took."""

    texts: list[str]
    completion_tokens: int
    window_s: float  # first batch started_at to last batch finished_at, from the ledger
    command_s: float  # the whole ``ecobatch run`` command
    batches: int
    others_cpu_share: float  # other processes' share of the cores during the command
    tries: int = 1  # which run was kept (see --max-others-share)

    def row(self) -> dict[str, float]:
        """The figures of the run, without the texts."""
        return {"completion_tokens": self.completion_tokens, "window_s": self.window_s,
                "command_s": self.command_s, "batches": self.batches,
                "tok_per_s": self.completion_tokens / self.window_s,
                "tok_per_s_command": self.completion_tokens / self.command_s,
                "others_cpu_share": self.others_cpu_share, "tries": self.tries}


def trace_log_sigma() -> float:
    """Standard deviation of log generated tokens in the packaged Azure conversation trace."""
    return float(np.log(read_trace().max_tokens.clip(min=1)).std())


def draw_max_tokens(n: int, low: int, high: int, seed: int) -> list[int]:
    """``n`` per-prompt limits: log-normal with the trace's sigma, median sqrt(low*high), clipped."""
    mu = (math.log(low) + math.log(high)) / 2
    draws = np.random.default_rng(seed).lognormal(mu, trace_log_sigma(), n)
    return [int(x) for x in np.clip(np.rint(draws), low, high)]


def prompt_token_ids(model: Path, prompts: list[str]) -> list[list[int]]:
    """Each prompt as the tokens ecobatch's worker feeds the model (chat template applied)."""
    native = load_vocab_only(model)
    try:
        vocab = Vocab(native)
        fmt = model_formatter(native, vocab)
        return [vocab.tokenize(fmt.render(GenerationRequest(request_id=str(i), prompt=p)))
                for i, p in enumerate(prompts)]
    finally:
        llama_cpp.llama_model_free(native)


def server_run(bins: LlamaBinaries, model: Path, token_ids: list[list[int]],
               max_tokens: list[int], slots: int,
               args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """One concurrent round on a fresh ``llama-server``: its figures and its answers."""
    with (llama_server(bins.server, model, slots, args.ctx_per_seq, args.threads) as url,
          others_cpu() as noise):
        run = complete_all(url, token_ids, max_tokens)
    return ({"completion_tokens": run.completion_tokens, "wall_s": run.wall_s,
             "tok_per_s": run.completion_tokens / run.wall_s,
             "eos_stops": sum(c.stop_type == "eos" for c in run.completions),
             "others_cpu_share": noise.share}, [c.text for c in run.completions])


def pipeline_env(slots: int, db_url: str, args: argparse.Namespace) -> dict[str, str]:
    """The environment of ``ecobatch run``: embedded default, this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOBATCH_")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "ECOBATCH_DATABASE_URL": db_url,
            "ECOBATCH_BATCH_SIZE": str(slots), "ECOBATCH_N_THREADS": str(args.threads),
            "ECOBATCH_N_CTX_PER_SEQ": str(args.ctx_per_seq), "ECOBATCH_TEMPERATURE": "0",
            **({"ECOBATCH_BATCHES_IN_FLIGHT": str(args.batches_in_flight)}
               if args.batches_in_flight else {})}


def pipeline_run(prompts: list[str], max_tokens: list[int], slots: int,
                 args: argparse.Namespace) -> PipelineRun:
    """``ecobatch run`` on the prompts with their limits; figures from its results and ledger."""
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        src, out, db_url = work / "prompts.jsonl", work / "results.jsonl", f"sqlite:///{work}/ledger.db"
        src.write_text("".join(json.dumps({"id": f"p{i:03d}", "prompt": p, "max_tokens": m}) + "\n"
                               for i, (p, m) in enumerate(zip(prompts, max_tokens, strict=True))))
        t0 = time.perf_counter()
        with others_cpu() as noise:
            done = subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", "run", str(src),
                                   "-o", str(out)], cwd=work, env=pipeline_env(slots, db_url, args),
                                  capture_output=True, text=True)
        command_s = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"ecobatch run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
        ordered = [rows[f"p{i:03d}"] for i in range(len(prompts))]
        window_s, batches = ledger_window(db_url)
        return PipelineRun([r["output"] or "" for r in ordered],
                           sum(int(r["completion_tokens"] or 0) for r in ordered),
                           window_s, command_s, batches, noise.share)


def ledger_window(db_url: str) -> tuple[float, int]:
    """Seconds from the first batch's start to the last batch's end, and the batches done."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            first, last, n = s.execute(
                select(func.min(Batch.started_at), func.max(Batch.finished_at), func.count())
                .where(col(Batch.status) == BatchStatus.DONE)).one()
    finally:
        engine.dispose()
    return (last - first).total_seconds(), int(n)


def uniform_requests(backend: BatchedLlamaBackend, n_prompt: int, n_gen: int,
                     n: int) -> list[GenerationRequest]:
    """``n`` story prompts padded word by word to ``n_prompt`` templated tokens (or one more),
    ``n_gen`` tokens each: llama-batched-bench's lengths, so both attend over the same cells
    (a whole filler sentence overshot by 14 tokens, past the 256 cells where a lone sequence's
    steps take a companion token)."""
    out = []
    words = FILLER.split()
    for i in range(n):
        text, k = f"Write a very long story about {TOPICS[i % len(TOPICS)]}.", 0
        while backend.count_tokens(backend.format_prompt(_story(i, text, n_gen))) < n_prompt:
            text += " " + words[k % len(words)]
            k += 1
        out.append(_story(i, text, n_gen))
    return out


def _story(i: int, text: str, n_gen: int) -> GenerationRequest:
    return GenerationRequest(request_id=str(i), prompt=text, max_tokens=n_gen)


def ours_uniform(model: Path, n_prompt: int, n_gen: int, n_parallel: list[int],
                 threads: int) -> dict[int, dict[str, float]]:
    """The batched backend's decode tokens/s at each batch size, and whether every sequence
    decoded all ``n_gen`` tokens (an early end of generation would make the lengths unequal)."""
    with BatchedLlamaBackend(str(model), n_threads=threads, n_ctx_per_seq=2 * (n_prompt + n_gen),
                             max_batch_size=max(n_parallel)) as backend:
        reqs = uniform_requests(backend, n_prompt, n_gen, max(n_parallel))
        run_ours(backend, reqs[:2], 2, Series("warm-up"))
        rows = {}
        for b in n_parallel:
            s = Series(f"ours-b{b}")
            run_ours(backend, reqs[:b], b, s)
            rows[b] = {"speed_tg": s.decode_tok_per_s[0], "full_length": s.tokens[0] == b * n_gen,
                       "prompt_tokens": backend.count_tokens(backend.format_prompt(reqs[0]))}
        return rows


def compare_config(cfg: Config, bins: LlamaBinaries, model: Path, args: argparse.Namespace) -> dict:
    """llama-server, then ``--rounds`` times the ecobatch pipeline and llama-server again, on
    the same prompts and limits; ratios of the medians, and the extremes."""
    prompts = load_prompts(cfg.prompts)
    limits = draw_max_tokens(cfg.prompts, cfg.min_tokens, cfg.max_tokens, args.seed)
    ids = prompt_token_ids(model, prompts)

    def server() -> tuple[dict[str, float], list[str]]:
        (row, texts), tries = quietest(lambda: server_run(bins, model, ids, limits, cfg.slots, args),
                                       lambda r: r[0]["others_cpu_share"], args.max_others_share,
                                       args.tries)
        return {**row, "tries": tries}, texts

    def pipeline() -> PipelineRun:
        run, tries = quietest(lambda: pipeline_run(prompts, limits, cfg.slots, args),
                              lambda r: r.others_cpu_share, args.max_others_share, args.tries)
        return replace(run, tries=tries)

    servers = [server()]
    ours: list[PipelineRun] = []
    for _ in range(args.rounds):
        ours.append(pipeline())
        servers.append(server())
    server_tps = [row["tok_per_s"] for row, _ in servers]
    ours_tps = [run.completion_tokens / run.window_s for run in ours]
    same = sum(a == b for a, b in zip(servers[0][1], ours[0].texts, strict=True))
    return {"config": asdict(cfg), "label": cfg.label(), "max_tokens": limits,
            "server": [row for row, _ in servers], "ecobatch": [run.row() for run in ours],
            "ratio_median": statistics.median(ours_tps) / statistics.median(server_tps),
            "ratio_range": [min(ours_tps) / max(server_tps), max(ours_tps) / min(server_tps)],
            "identical_outputs": same}


def compare_uniform(bins: LlamaBinaries, model: Path, args: argparse.Namespace) -> dict:
    """``llama-batched-bench`` and our batched backend at the same uniform lengths."""
    npl = [int(x) for x in args.npl.split(",")]
    (peer, peer_noise), peer_tries = quietest(
        lambda: _noted(lambda: batched_bench(bins.batched_bench, model, args.npp, args.ntg, npl,
                                             args.threads)),
        lambda r: r[1].share, args.max_others_share, args.tries)
    (ours, ours_noise), ours_tries = quietest(
        lambda: _noted(lambda: ours_uniform(model, args.npp, args.ntg, npl, args.threads)),
        lambda r: r[1].share, args.max_others_share, args.tries)
    return {"npp": args.npp, "ntg": args.ntg, "npl": npl,
            "batched_bench": {b: peer[b]["speed_tg"] for b in npl},
            "ecobatch_backend": {b: ours[b]["speed_tg"] for b in npl},
            "ecobatch_full_length": all(ours[b]["full_length"] for b in npl),
            "ecobatch_prompt_tokens": ours[npl[0]]["prompt_tokens"],
            "ratio": {b: ours[b]["speed_tg"] / peer[b]["speed_tg"] for b in npl},
            "others_cpu_share": [peer_noise.share, ours_noise.share],
            "tries": [peer_tries, ours_tries]}


def _noted(measure: Callable[[], T]) -> tuple[T, Noise]:
    with others_cpu() as noise:
        result = measure()
    return result, noise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, help="prompts of one configuration (instead of the issue's two)")
    p.add_argument("--slots", type=int, help="llama-server slots = ecobatch batch size, one configuration")
    p.add_argument("--max-tokens-range", help="LOW-HIGH of the per-prompt max_tokens, one configuration")
    p.add_argument("--quick", action="store_true",
                   help="8 prompts, 9-32 tokens, 4 slots; uniform 32+32 at 1,4 (a smoke run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the max_tokens draws")
    p.add_argument("--max-others-share", type=float, default=0.15,
                   help="rerun a measurement while other processes took more than this share "
                        "of the cores during it (a neighbour on a shared machine)")
    p.add_argument("--tries", type=int, default=3,
                   help="most runs of one measurement under --max-others-share; the quietest is kept")
    p.add_argument("--rounds", type=int, default=1,
                   help="ecobatch runs per configuration, each followed by another llama-server run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads on every side")
    p.add_argument("--batches-in-flight", type=int,
                   help="ecobatch: batches a worker holds at once (default: the settings')")
    p.add_argument("--ctx-per-seq", type=int, default=1024, help="context tokens per slot / sequence")
    p.add_argument("--npp", type=int, default=128, help="uniform: prompt tokens per sequence")
    p.add_argument("--ntg", type=int, default=128, help="uniform: decoded tokens per sequence")
    p.add_argument("--npl", default="1,4,8", help="uniform: comma-separated sequence counts")
    p.add_argument("--no-uniform", action="store_true", help="leave out the uniform-length part")
    p.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.npp, args.ntg, args.npl = 32, 32, "1,4"
    return args


def configs_of(args: argparse.Namespace) -> list[Config]:
    """The issue's two configurations, the quick one, or the one the options describe."""
    if args.quick:
        return [QUICK_CONFIG]
    if args.prompts is None and args.slots is None and args.max_tokens_range is None:
        return list(ISSUE_CONFIGS)
    base = ISSUE_CONFIGS[0]
    low, high = (base.min_tokens, base.max_tokens)
    if args.max_tokens_range:
        low, high = (int(x) for x in args.max_tokens_range.split("-"))
    return [Config(args.prompts or base.prompts, args.slots or base.slots, low, high)]


def main(argv: list[str] | None = None) -> None:
    """Build (once) the peers, run every comparison, print the table, write the JSON."""
    args = parse_args(argv)
    console = Console(width=max(Console().width, 170))  # the table is wide; a pipe has 80
    bins = ensure_binaries()
    model = default_model_path()
    machine = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    report: dict = {"model": str(model), "binaries": str(bins.folder), "build": bins.info,
                    "threads": args.threads, "ctx_per_seq": args.ctx_per_seq, "seed": args.seed,
                    "max_others_share": args.max_others_share,
                    "configs": [compare_config(c, bins, model, args) for c in configs_of(args)]}
    if not args.no_uniform:
        report["uniform"] = compare_uniform(bins, model, args)
    machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"] = machine
    render(report, console)
    notes(report, console)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
