"""Service faults on real processes: Redis restarted mid-job, the database cut off, SQLite
under several workers at once.

Each test runs its own redis-server (or a TCP proxy in front of PostgreSQL) that it may kill;
the shared services are never touched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from pipeline.broker.queue import PENDING_KEY
from pipeline.client import Client
from tests.cluster import (
    energy_counted_once,
    fault_env,
    ledger_counts,
    run_cli,
    running_cluster,
    start_worker,
    wait_for_running_batch,
    wait_until,
)
from tests.servers import RedisServer, TcpProxy

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 120.0


def _answered(client: Client, job_id: str) -> int:
    return ledger_counts(client.engine, job_id)["rows"]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "clean"])
def test_redis_restarted_mid_job_the_job_completes(
    sqlite_url: str, tmp_path: Path, how: int
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        env = fault_env(server.url, sqlite_url, ECOBATCH_BATCH_SIZE="2")
        with running_cluster(env, tmp_path / "logs") as c:
            client = c.client
            # 12 batches of 0.5 s: 4 answers come after 1 s, and 5 s of work is still queued
            job_id = client.submit([f"[sleep 0.25] question {i}" for i in range(24)])
            wait_until("some answers", lambda: _answered(client, job_id) >= 4, WAIT_S)
            server.stop(how)  # the pending list and queued batches are gone with it
            time.sleep(1.0)
            server.start()
            client.wait(job_id, timeout_s=WAIT_S)
            c.children.check_alive()  # router and worker rode it out
    assert ledger_counts(client.engine, job_id) == {"rows": 24, "distinct": 24, "prompts": 24}
    energy_counted_once(client.engine)


def test_reconcile_command_restores_prompts_and_batches_after_redis_loss(
    sqlite_url: str, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        env = fault_env(server.url, sqlite_url, ECOBATCH_BATCH_SIZE="2")
        with running_cluster(env, tmp_path / "logs") as c:
            client = c.client
            job_id = client.submit([f"[sleep 0.5] question {i}" for i in range(10)])
            wait_until("some answers", lambda: _answered(client, job_id) >= 2, WAIT_S)
            for child in (c.router, *c.workers):
                child.proc.send_signal(signal.SIGTERM)
                child.proc.wait(timeout=60)
            broker = redis.Redis.from_url(server.url)
            assert broker.llen("device.cpu") >= 1  # batches still waiting for a worker
            broker.flushall()  # Redis lost everything; no router or worker is running
            out = run_cli(["reconcile"], tmp_path, {**os.environ, **env})
            assert out.returncode == 0, out.stderr
            assert "republished" in out.stderr
            assert broker.llen("device.cpu") + broker.llen(PENDING_KEY) > 0
            start_worker(c.children, "worker2")
            c.children.start("router2", ["router"])
            client.wait(job_id, timeout_s=WAIT_S)
    assert ledger_counts(client.engine, job_id) == {"rows": 10, "distinct": 10, "prompts": 10}


def test_database_cut_off_for_a_while_results_are_retried_not_dropped(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    proxy, via_proxy = TcpProxy.in_front_of(pg_url)
    env = fault_env(redis_url, via_proxy, ECOBATCH_BATCH_SIZE="2")
    try:
        with running_cluster(env, tmp_path / "logs", client_db_url=pg_url) as c:
            client = c.client
            job_id = client.submit([f"[sleep 1] question {i}" for i in range(8)])
            wait_until("some answers", lambda: _answered(client, job_id) >= 2, WAIT_S)
            wait_for_running_batch(client.engine, WAIT_S)
            proxy.cut()
            time.sleep(5.0)  # the running batch finishes decoding meanwhile and cannot write
            proxy.restore()
            client.wait(job_id, timeout_s=WAIT_S)
            log = c.workers[0].log_tail(200_000)
    finally:
        proxy.close()
    assert "database unavailable" in log  # the decoded answers waited for the database
    assert ledger_counts(client.engine, job_id) == {"rows": 8, "distinct": 8, "prompts": 8}
    energy_counted_once(client.engine)


def test_sqlite_under_concurrent_workers_has_no_lock_errors(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, sqlite_url, ECOBATCH_BATCH_SIZE="2")
    with running_cluster(env, tmp_path / "logs", workers=3) as c:
        client = c.client
        job_ids = [client.submit([f"job {j} question {i}" for i in range(100)]) for j in range(2)]
        for job_id in job_ids:
            client.wait(job_id, timeout_s=WAIT_S)
        logs = "".join(w.log_tail(1_000_000) for w in c.workers)
    assert "database is locked" not in logs and "Traceback" not in logs
    assert ledger_counts(client.engine) == {"rows": 200, "distinct": 200, "prompts": 200}
    energy_counted_once(client.engine)
