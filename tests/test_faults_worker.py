"""Worker faults on real processes: killed, crashing, raising, hanging, stopped, doubled.

Inference is the fault-injecting echo backend (tests/faultbackend.py), which implements the
real InferenceBackend protocol, so each test runs in seconds; a real Redis, real Celery
router and worker processes and a real SQL ledger do everything else.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlmodel import Session

from pipeline.app.celery_app import INFER_TASK, create_app
from pipeline.app.cli.main import main
from pipeline.client import Client
from pipeline.ledger.models import Batch, BatchStatus, Prompt, PromptStatus
from tests.cluster import (
    Cluster,
    energy_counted_once,
    fault_env,
    kill_pool_children,
    kill_tree,
    ledger_counts,
    running_cluster,
    start_worker,
    wait_for_running_batch,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 120.0


def _prompts(n: int, first: str = "") -> list[str]:
    return [f"{first if i == 0 else ''} answer number {i} please".strip() for i in range(n)]


def _running_job(c: Cluster, n: int, first: str) -> tuple[str, Batch]:
    """Submit ``n`` prompts (the first one carrying ``first``); return once a batch runs."""
    job_id = c.client.submit(_prompts(n, first))
    return job_id, wait_for_running_batch(c.client.engine, WAIT_S)


def _batches(engine) -> list[Batch]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.execute(select(Batch)).scalars())


def _assert_complete(client: Client, job_id: str, n: int) -> None:
    counts = ledger_counts(client.engine, job_id)
    assert counts == {"rows": n, "distinct": n, "prompts": n}, counts
    energy_counted_once(client.engine)


def test_killed_pool_process_is_redelivered_once_each(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, sqlite_url)
    with running_cluster(env, tmp_path / "logs") as c:
        client, (job_id, victim) = c.client, _running_job(c, 8, "[sleep 3]")
        assert kill_pool_children(c.workers[0]) == 1
        client.wait(job_id, timeout_s=WAIT_S)
    _assert_complete(client, job_id, 8)
    with Session(client.engine) as s:
        redone = s.get(Batch, victim.id)
    assert redone is not None and redone.status == BatchStatus.DONE and redone.attempts == 2


def test_killed_worker_main_process_loses_nothing(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    # The unacknowledged message comes back once the visibility timeout has passed.
    env = fault_env(redis_url, pg_url, ECOBATCH_VISIBILITY_TIMEOUT_S="8",
                    ECOBATCH_TASK_TIME_LIMIT_S="6")
    with running_cluster(env, tmp_path / "logs") as c:
        client, (job_id, _) = c.client, _running_job(c, 8, "[sleep 2]")
        kill_tree(c.workers[0])
        start_worker(c.children, "worker2")
        client.wait(job_id, timeout_s=WAIT_S)
    _assert_complete(client, job_id, 8)


@pytest.mark.parametrize("fault", ["[crash]", "[raise]"])
def test_always_failing_batch_is_dead_lettered_and_the_rest_finishes(
    redis_url: str, sqlite_url: str, tmp_path: Path, fault: str
) -> None:
    env = fault_env(redis_url, sqlite_url, ECOBATCH_BATCH_SIZE="2")
    with running_cluster(env, tmp_path / "logs") as c:
        client = c.client
        job_id = client.submit(_prompts(6, fault))
        view = client.wait(job_id, timeout_s=WAIT_S)
    assert (view.n_results, view.n_failed) == (4, 2)
    dead = [b for b in _batches(client.engine) if b.status == BatchStatus.DEAD]
    assert len(dead) == 1 and dead[0].attempts == 4  # three runs counted, the fourth gives up
    assert dead[0].error is not None and "gave up after 3 attempts" in dead[0].error
    expected = "RuntimeError: injected fault" if fault == "[raise]" else "did not finish"
    assert expected in dead[0].error
    with Session(client.engine) as s:
        errors = {p.error for p in s.execute(select(Prompt).where(
            Prompt.status == PromptStatus.DEAD)).scalars()}
    assert errors == {dead[0].error}  # visible in status/results with the reason
    assert client.status(job_id).errors == {dead[0].error: 2}
    shown = CliRunner().invoke(main, ["status", job_id, "--database-url", sqlite_url])
    assert shown.exit_code == 0 and "dead-lettered" in shown.output
    assert "gave up after 3 attempts" in shown.output
    energy_counted_once(client.engine)


@pytest.mark.parametrize("fault, last_error", [
    ("[hang]", "SoftTimeLimitExceeded"),  # interrupted by the soft limit, then retried
    ("[stuck]", "did not finish"),  # deaf to it: killed by the hard limit, then redelivered
])
def test_hung_batch_is_stopped_by_the_time_limit_and_dead_lettered(
    redis_url: str, sqlite_url: str, tmp_path: Path, fault: str, last_error: str
) -> None:
    env = fault_env(redis_url, sqlite_url, ECOBATCH_BATCH_SIZE="2", ECOBATCH_MAX_ATTEMPTS="2",
                    ECOBATCH_TASK_TIME_LIMIT_S="3", ECOBATCH_VISIBILITY_TIMEOUT_S="30")
    with running_cluster(env, tmp_path / "logs") as c:
        job_id = c.client.submit(_prompts(4, fault))
        view = c.client.wait(job_id, timeout_s=WAIT_S)
    assert (view.n_results, view.n_failed) == (2, 2)
    dead = [b for b in _batches(c.client.engine) if b.status == BatchStatus.DEAD]
    assert len(dead) == 1 and dead[0].error and "gave up after 2 attempts" in dead[0].error
    assert last_error in dead[0].error


def test_same_batch_delivered_twice_at_once_writes_one_row_per_prompt(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, pg_url, ECOBATCH_BATCH_SIZE="4")
    with running_cluster(env, tmp_path / "logs", workers=2) as c:
        client, (job_id, batch) = c.client, _running_job(c, 4, "[sleep 1]")
        app = create_app(client.settings)
        app.send_task(INFER_TASK, args=[batch.id], queue="device.cpu")  # a duplicate, now
        client.wait(job_id, timeout_s=WAIT_S)
        with Session(client.engine) as s:
            wait_attempts = s.get(Batch, batch.id)
    _assert_complete(client, job_id, 4)
    assert wait_attempts is not None and wait_attempts.status == BatchStatus.DONE


def test_warm_shutdown_finishes_the_batch_in_flight(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, sqlite_url)
    with running_cluster(env, tmp_path / "logs") as c:
        client, (job_id, victim) = c.client, _running_job(c, 12, "[sleep 3]")
        c.workers[0].proc.send_signal(signal.SIGTERM)
        c.router.proc.send_signal(signal.SIGTERM)
        assert c.workers[0].proc.wait(timeout=60) == 0  # warm: it waited for the batch
        c.router.proc.wait(timeout=60)
        with Session(client.engine) as s:
            finished = s.get(Batch, victim.id)
        assert finished is not None and finished.status == BatchStatus.DONE
        assert finished.attempts == 1
        c.children.start("router2", ["router"])
        start_worker(c.children, "worker2")
        client.wait(job_id, timeout_s=WAIT_S)
    _assert_complete(client, job_id, 12)

