"""A pool process killed in the middle of a batch loses nothing: the batch is redelivered."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.children import ChildGroup
from pipeline.client import Client
from pipeline.db import make_engine
from pipeline.models import Batch, BatchStatus, Result
from pipeline.settings import load_settings

pytestmark = pytest.mark.slow
WAIT_S = 300.0


def _running_batch(engine) -> Batch | None:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.execute(select(Batch).where(Batch.status == BatchStatus.RUNNING)).scalars().first()


def _wait_for_running_batch(engine, deadline: float) -> Batch:  # type: ignore[no-untyped-def]
    while time.monotonic() < deadline:
        batch = _running_batch(engine)
        if batch is not None:
            return batch
        time.sleep(0.05)
    raise AssertionError("no batch started running")


def test_killed_pool_process_mid_batch_is_redelivered_without_duplicates(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = {"ECOBATCH_REDIS_URL": redis_url, "ECOBATCH_DATABASE_URL": sqlite_url,
           "ECOBATCH_MAX_WAIT_S": "0.2"}
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    with ChildGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        worker = children.start("worker", ["worker", "--device", "cpu"])
        client = Client(settings)
        job_id = client.submit([f"Write a long story about the number {i}." for i in range(8)],
                               max_tokens=96)
        victim = _wait_for_running_batch(engine, time.monotonic() + WAIT_S)
        for pool_child in psutil.Process(worker.proc.pid).children():
            pool_child.send_signal(signal.SIGKILL)  # the prefork child running the batch
        client.wait(job_id, timeout_s=WAIT_S)
        rows = client.results(job_id)
    assert len(rows) == 8 and all(r["output"].strip() for r in rows)
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Result)).scalar_one() == 8
        redone = s.get(Batch, victim.id)
    assert redone is not None and redone.status == BatchStatus.DONE
    assert redone.attempts == 2  # counted in SQL: the killed attempt and the redelivery
