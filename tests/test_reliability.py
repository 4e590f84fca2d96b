"""A pool process killed in the middle of a batch loses nothing: the batch is redelivered.

The worker runs one batch at a time in a prefork child (continuous batching off); the
continuous-batching worker, which has no pool children, is killed in
``tests/test_continuous_worker.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.client import Client
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, BatchStatus, Result
from pipeline.settings import load_settings
from tests.cluster import (
    QuickStopGroup,
    cluster_env,
    kill_pool_children,
    start_worker,
    wait_for_running_batch,
)

pytestmark = pytest.mark.slow
WAIT_S = 300.0


def test_killed_pool_process_mid_batch_is_redelivered_without_duplicates(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_CONTINUOUS_BATCHING="false")
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        worker = start_worker(children)
        client = Client(settings)
        job_id = client.submit([f"Write a long story about the number {i}." for i in range(8)],
                               max_tokens=96)
        victim = wait_for_running_batch(engine, WAIT_S)
        assert kill_pool_children(worker) == 1  # the prefork child running the batch
        client.wait(job_id, timeout_s=WAIT_S)
        rows = client.results(job_id)
    assert len(rows) == 8 and all(r["output"].strip() for r in rows)
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Result)).scalar_one() == 8
        redone = s.get(Batch, victim.id)
    assert redone is not None and redone.status == BatchStatus.DONE
    assert redone.attempts == 2  # counted in SQL: the killed attempt and the redelivery
