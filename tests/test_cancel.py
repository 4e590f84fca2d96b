"""``ecobatch cancel`` and ``Client.cancel`` on a real router and worker, SQLite and PostgreSQL:
no prompt of a cancelled job starts after the cancel, a batch in flight finishes whole, a repeat
changes nothing, and ``status`` shows ``cancelled``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from pipeline.ledger.models import Batch, BatchStatus, JobStatus, Prompt, PromptStatus, Result
from pipeline.ledger.state import CANCELLED_REASON
from tests.cluster import cluster_env, run_cli, running_cluster, wait_until

PROMPTS = [{"prompt": f"Count to {i}.", "max_tokens": 8} for i in range(24)]
pytestmark = pytest.mark.slow


def _batches_whole(client_engine: object, job_id: str) -> None:
    """Every prompt put in a batch is answered: nothing half-written."""
    with Session(client_engine) as s:  # type: ignore[arg-type]
        prompts = s.execute(select(Prompt).where(Prompt.job_id == job_id)).scalars().all()
        answered = {r.prompt_id for r in s.execute(
            select(Result).where(Result.job_id == job_id)).scalars()}
        batches = {b.id: b for b in s.execute(select(Batch)).scalars()}
    for p in prompts:
        if p.status == PromptStatus.DEAD:
            assert p.error == CANCELLED_REASON and p.id not in answered
        else:
            assert p.id in answered and batches[str(p.batch_id)].status == BatchStatus.DONE


def test_cancel_mid_way_stops_new_batches(redis_url: str, db_url: str, tmp_path: Path) -> None:
    env = cluster_env(redis_url, db_url, ECOBATCH_BATCH_SIZE="2")
    with running_cluster(env, tmp_path / "logs") as c:
        job_id = c.client.submit(PROMPTS)
        wait_until("a first answer", lambda: c.client.status(job_id).n_results > 0, 240)
        view = c.client.cancel(job_id)
        assert view.status == JobStatus.CANCELED
        c.client.wait(job_id, timeout_s=120)
        end = c.client.status(job_id)
        assert end.status == JobStatus.CANCELED
        assert 0 < end.n_results < len(PROMPTS) and end.n_results + end.n_failed == len(PROMPTS)
        _batches_whole(c.client.engine, job_id)
        again = run_cli(["cancel", job_id], tmp_path, env)
        assert again.returncode == 0 and "cancelled" in again.stdout, again.stderr
        assert c.client.status(job_id).n_results == end.n_results
        shown = run_cli(["status", job_id], tmp_path, env)
        assert "cancelled" in shown.stdout


def test_cancel_unknown_job_is_not_found(sqlite_url: str, tmp_path: Path) -> None:
    out = run_cli(["cancel", "f" * 32], tmp_path, {**cluster_env("redis://127.0.0.1:1/0",
                                                                 sqlite_url)})
    assert out.returncode != 0 and "not found" in out.stderr
