"""Load under faults: a 100k-prompt job completes, one result per prompt, while a worker is
killed (SIGKILL, main and pool processes) and restarted twice mid-job.

The kills follow the job's progress, not the clock: after a quarter and after a half of its
batches are done. So they always land mid-job, whatever the machine's speed, and the batch each
one loses is taken back while the rest of the job still runs.

Inference is the echo backend (``ECOBATCH_BACKEND=echo``), which implements the real
InferenceBackend protocol; everything else is real: Redis, Celery router and worker processes,
PostgreSQL, claims, accounting and upserts. The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.client import Client
from pipeline.ledger.models import Batch, BatchStatus
from pipeline.settings import load_settings
from tests.cluster import (
    QuickStopGroup,
    cluster_env,
    energy_counted_once,
    kill_all,
    ledger_counts,
    start_worker,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]
N_PROMPTS = 100_000
BATCH_SIZE = 128
N_BATCHES = -(-N_PROMPTS // BATCH_SIZE)
KILL_AFTER_BATCHES = (N_BATCHES // 4, N_BATCHES // 2)  # done batches before each kill
WAIT_S = 420.0
REGISTRY = """
[[device]]
name = "echo"
kind = "cpu"
zone = "DE-LU"
tdp_w = 65.0
max_batch_size = 256
nominal_tokens_per_s = 100000.0
"""


def _done_batches(client: Client) -> int:
    with Session(client.engine) as s:
        return int(s.execute(select(func.count()).select_from(Batch)
                             .where(Batch.status == BatchStatus.DONE)).scalar_one())


def _batch_figures(client: Client) -> dict[str, int]:
    with Session(client.engine) as s:
        rows = s.execute(select(Batch.status, func.count(), func.sum(Batch.attempts))
                         .group_by(Batch.status)).all()
        redelivered = s.execute(select(func.count()).select_from(Batch)
                                .where(Batch.attempts > 1)).scalar_one()
    figures = {f"batches_{status.value}": int(n) for status, n, _ in rows}
    figures["attempts"] = int(sum(a or 0 for _, _, a in rows))
    figures["batches_run_more_than_once"] = int(redelivered)
    return figures


def test_100k_prompts_complete_while_workers_are_killed_mid_job(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    registry = tmp_path / "devices.toml"
    registry.write_text(REGISTRY)
    env = cluster_env(redis_url, pg_url, ECOBATCH_BACKEND="echo", ECOBATCH_DEVICES=str(registry),
                      ECOBATCH_BATCH_SIZE=str(BATCH_SIZE), ECOBATCH_VISIBILITY_TIMEOUT_S="20",
                      ECOBATCH_TASK_TIME_LIMIT_S="15")
    prompts = [f"Question {i}: how much energy does a batch of {i % 97} prompts use?"
               for i in range(N_PROMPTS)]
    kills: list[dict[str, float]] = []
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children, \
            Client(load_settings(redis_url=redis_url, database_url=pg_url)) as client:
        children.start("router", ["router"])
        workers = [start_worker(children, "worker-a", "echo"), start_worker(children, "worker-b", "echo")]
        t0 = time.monotonic()
        job_id = client.submit(prompts, max_tokens=16)
        submit_s = time.monotonic() - t0
        while not client.status(job_id).finished:
            assert time.monotonic() - t0 < WAIT_S, client.status(job_id)
            done = _done_batches(client)
            if len(kills) < len(KILL_AFTER_BATCHES) and done >= KILL_AFTER_BATCHES[len(kills)]:
                victim = len(kills) % 2
                kill_all(workers[victim])
                workers[victim] = start_worker(children, f"worker-{len(kills)}-restarted", "echo")
                kills.append({"at_s": round(time.monotonic() - t0, 1), "batches_done": done})
            time.sleep(0.5)  # each look counts the job's 100k prompts: not too often
        wall_s = time.monotonic() - t0
        view = client.status(job_id)
    counts = ledger_counts(client.engine, job_id)
    figures = {"prompts": N_PROMPTS, "wall_s": round(wall_s, 1), "submit_s": round(submit_s, 2),
               "prompts_per_s": round(N_PROMPTS / wall_s, 1), "worker_kills": kills,
               **counts, **_batch_figures(client), "energy_j": round(view.energy_j, 3)}
    print("\nLOAD FIGURES " + json.dumps(figures))
    assert counts == {"rows": N_PROMPTS, "distinct": N_PROMPTS, "prompts": N_PROMPTS}
    assert view.n_failed == 0
    assert len(kills) == len(KILL_AFTER_BATCHES)  # the faults really happened during the job
    energy_counted_once(client.engine)
    with Session(client.engine) as s:
        assert s.execute(select(func.count()).select_from(Batch).where(
            Batch.status != BatchStatus.DONE)).scalar_one() == 0
