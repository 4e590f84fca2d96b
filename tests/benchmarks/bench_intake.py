"""Producer throughput: parse + validate + submit a 100k-prompt JSONL, side by side in one run.

Run: ``python -m tests.benchmarks.bench_intake [--prompts N] [--repeats N] [--no-postgres]``.

Measured on a real Redis and on SQLite and PostgreSQL, the same generated file each time:
1. end to end: ``submit_file`` (read, decode, validate every line, one SQL transaction,
   then the Redis push); prompts accepted per wall-clock second. Goal: >= 20,000 /s.
2. the SQL phase alone, ours (COPY on PostgreSQL, driver executemany on SQLite) next to a
   plain SQLAlchemy Core ``insert`` executemany of the same rows, as a ratio.

Services: ``ECOBATCH_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``; only the
pending key is touched) and ``ECOBATCH_BENCH_PG_URL`` (default a dedicated database
``ecobatch_bench`` on the local server, created if missing, its tables dropped each run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import Engine, insert
from sqlmodel import SQLModel

from pipeline.broker.queue import PENDING_KEY
from pipeline.fleet.servedmodels import ModelDemand
from pipeline.intake.parse import read_input
from pipeline.intake.submit import (
    PROMPT_COLUMNS,
    SubmitHandles,
    _write_sql,
    new_job_id,
    submit_file,
)
from pipeline.ledger.db import make_engine, normalise_url
from pipeline.ledger.models import Job, JobStatus, Prompt, utc_now
from pipeline.settings import load_settings
from workers.backends.llama.tokenizer import ModelTokenizer

GOAL_PER_S = 20_000
TOPICS = ["photosynthesis", "grid carbon intensity", "PUE", "batch inference", "KV caches",
          "water usage effectiveness", "embodied carbon", "tokenisers", "Jetson Orin", "RAPL"]


def write_jsonl(path: Path, n: int, seed: int = 7) -> None:
    """A realistic mix: mostly ``prompt`` + id, some max_tokens, chat messages and metadata."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            text = f"Explain {topic} to a new engineer in {rnd.randint(2, 6)} sentences. " * (
                1 + i % 3)
            rec: dict[str, Any] = {"id": f"p{i}", "prompt": text.strip()}
            if i % 10 == 0:
                rec["max_tokens"] = rnd.choice([32, 64, 128])
            if i % 20 == 0:
                del rec["prompt"]
                rec["messages"] = [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": text.strip()}]
            if i % 50 == 0:
                rec["metadata"] = {"topic": topic, "batch": i // 1000}
            fh.write(json.dumps(rec) + "\n")


def ensure_pg_database(url: str) -> str:
    """Create the benchmark's database if missing; return the SQLAlchemy URL."""
    url = normalise_url(url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    base, _, dbname = plain.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone():
            conn.execute(f'create database "{dbname}"')
    return url


def fresh_engine(url: str) -> Engine:
    """An engine on empty ecobatch tables."""
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    return engine


def time_submit(engine: Engine, rclient: redis.Redis, path: Path) -> float:
    """Seconds for one ``submit_file`` of ``path``."""
    rclient.delete(PENDING_KEY)
    t0 = time.perf_counter()
    handles = SubmitHandles(load_settings(strategy="carbon", max_tokens=128), ModelTokenizer(None),
                            engine, rclient)
    submit_file(handles, path)
    elapsed = time.perf_counter() - t0
    rclient.delete(PENDING_KEY)
    return elapsed


def time_sql_phases(engine: Engine, path: Path) -> tuple[float, float]:
    """Seconds of our SQL write and of a plain Core executemany of the same rows."""
    records = read_input(path)
    job_row = {"id": new_job_id(), "created_at": utc_now(), "source": "bench", "n_prompts":
               len(records), "strategy": "carbon", "max_tokens": 128, "status": JobStatus.QUEUED}
    t0 = time.perf_counter()
    rows = _write_sql(engine, job_row, records, 128, ModelDemand())
    ours = time.perf_counter() - t0
    job_id = new_job_id()
    dict_rows = [dict(zip(PROMPT_COLUMNS, r, strict=True)) for r in rows]
    for d in dict_rows:  # Core serialises JSON and the enum itself
        d.update(id=d["id"].replace(job_row["id"], job_id), job_id=job_id, status=None)
        d.pop("status")
        d["messages"] = json.loads(d["messages"]) if d["messages"] else None
        d["metadata"] = json.loads(d["metadata"]) if d["metadata"] else None
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(Job.__table__), [{**job_row, "id": job_id}])  # type: ignore[attr-defined]
        for i in range(0, len(dict_rows), 10_000):
            conn.execute(insert(Prompt.__table__), dict_rows[i : i + 10_000])  # type: ignore[attr-defined]
    return ours, time.perf_counter() - t0


def measure(name: str, url: str, rclient: redis.Redis, path: Path, n: int,
            repeats: int) -> dict[str, float]:
    """Print and return the end-to-end rate and the SQL-phase ratio on one database."""
    engine = fresh_engine(url)
    times = [time_submit(engine, rclient, path) for _ in range(repeats)]
    ours_s, core_s = time_sql_phases(engine, path)
    engine.dispose()
    best, median = n / min(times), n / statistics.median(times)
    verdict = "meets" if median >= GOAL_PER_S else "MISSES"
    print(f"{name:10s} end to end: median {median:9,.0f} prompts/s, best {best:9,.0f} "
          f"({verdict} the {GOAL_PER_S:,}/s goal; runs {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"{'':10s} SQL phase: ours {ours_s:.2f} s vs Core executemany {core_s:.2f} s "
          f"= {core_s / ours_s:.1f}x faster")
    return {"median_per_s": median, "best_per_s": best, "sql_ours_s": ours_s, "sql_core_s": core_s}


def main() -> None:
    """Generate the file, then measure SQLite and PostgreSQL side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=100_000, help="prompts in the file")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per database")
    ap.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = ap.parse_args()
    redis_url = os.environ.get("ECOBATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    pg_url = os.environ.get("ECOBATCH_BENCH_PG_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/ecobatch_bench")
    rclient = redis.Redis.from_url(redis_url, decode_responses=True)
    rclient.ping()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        write_jsonl(path, args.prompts)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.prompts:,} prompts, {size_mb:.1f} MB JSONL, {os.cpu_count()} CPUs, "
              f"Redis {redis_url}")
        res = {"sqlite": measure("SQLite", f"sqlite:///{tmp}/bench.db", rclient, path,
                                 args.prompts, args.repeats)}
        if not args.no_postgres:
            res["postgres"] = measure("PostgreSQL", ensure_pg_database(pg_url), rclient, path,
                                      args.prompts, args.repeats)
            ratio = res["postgres"]["median_per_s"] / res["sqlite"]["median_per_s"]
            print(f"PostgreSQL / SQLite end-to-end rate: {ratio:.2f}")


if __name__ == "__main__":
    main()
